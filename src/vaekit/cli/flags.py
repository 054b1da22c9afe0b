"""Flags from the config dataclasses: one per field, its help and range read from the field itself.

Settings come from the config dataclasses: defaults, then a config file (--config, TOML or YAML), then flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import typing
from collections.abc import Callable
from typing import Any

from vaekit.config import Bounds, RunConfig, check_range, short
from vaekit.config_files import read_config_file
from vaekit.errors import VaekitError

# Flag name for each config field where it is not simply the field name with dashes.
FLAG_NAMES = {("model", "kind"): "model", ("data", "name"): "data", ("model", "channels"): "conv-channels",
              ("data", "channels"): "image-channels", ("train", "samples"): "samples"}

SECTIONS = RunConfig.SECTIONS  # each section of a run and its config dataclass
NOT_FLAGS = {("model", "image_shape"), ("model", "classes")}  # settings the data decide, not the user


def flag_name(section: str, name: str) -> str:
    return "--" + FLAG_NAMES.get((section, name), name.replace("_", "-"))


def parse_int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {short(text)}") from None


def number(tp: type, lo: float | None = None, hi: float | None = None, *, open_lo: bool = False,
           bounds: Bounds | None = None) -> Callable[[str], Any]:
    """An argparse type: parse `tp` (int, float or an int list) and check the range, so a bad value is refused
    where the flag is declared, in one line naming the flag."""
    bounds = bounds or (lo, hi, open_lo, False)

    def parse(text: str) -> Any:
        try:
            value = parse_int_list(text) if tp is tuple else tp(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if tp is int else 'a number'}, got "
                                             f"{short(text)}") from None
        try:
            for item in value if tp is tuple else (value,):
                check_range(item, bounds, "value")
        except VaekitError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix("value: ")) from None
        return value

    parse.__name__ = tp.__name__  # argparse names the type in its messages
    parse.bounds = bounds  # type: ignore[attr-defined]  (the range, for tests that try each flag at its limits)
    return parse


# Settings that name something, and the registry (module, attribute) holding the names they accept; a
# registry is imported only when its flag is parsed, so `vaekit --help` does not load torch.
REGISTRIES = {("model", "kind"): ("vaekit.models.presets", "PRESETS"),
              ("model", "arch"): ("vaekit.models.networks", "ARCHS"),
              ("model", "likelihood"): ("vaekit.models.likelihoods", "LIKELIHOODS"),
              ("train", "optimizer"): ("vaekit.training.step", "OPTIMIZERS"),
              ("train", "schedule"): ("vaekit.training.step", "SCHEDULES"),
              ("data", "resize"): ("vaekit.data.folder", "RESIZE"),
              ("data", "labels"): ("vaekit.data.folder", "LABELS")}


def registry(section: str, name: str) -> list[str]:
    """The names a setting accepts, from its registry (imported now, not when vaekit starts)."""
    module, attribute = REGISTRIES[section, name]
    return list(getattr(importlib.import_module(module), attribute))


def one_of(section: str, name: str) -> Callable[[str], str]:
    """An argparse type: a name from the registry of this setting, refused where the flag is declared."""

    def parse(text: str) -> str:
        known = registry(section, name)
        if text not in known:
            raise argparse.ArgumentTypeError(f"invalid choice: {short(text)} (choose from {', '.join(known)})")
        return text

    parse.__name__ = name
    return parse


def model_names(text: str) -> list[str]:
    """An argparse type: comma-separated preset names (`--models ae,vae,iwae`), each checked, none twice."""
    known = registry("model", "kind")
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = next((n for n in names if n not in known), None)
    if bad is not None or not names or len(set(names)) < len(names):
        why = f"unknown model {short(bad)}" if bad is not None else "no model named" if not names else "a model twice"
        raise argparse.ArgumentTypeError(f"{why} (choose from {', '.join(known)}, comma-separated)")
    return names


def named_path(text: str) -> tuple[str, str]:
    """An argparse type: NAME=PATH, a preset name and the run or checkpoint folder that holds one."""
    name, sep, path = text.partition("=")
    known = registry("model", "kind")
    if not sep or not path or name not in known:
        raise argparse.ArgumentTypeError(f"expected MODEL=PATH with MODEL one of {', '.join(known)}, got {short(text)}")
    return name, path


def add_config_flags(parser: argparse.ArgumentParser, skip: set[tuple[str, str]] = frozenset(),
                     sections: tuple[str, ...] = tuple(SECTIONS)) -> None:
    """One flag per config field of `sections`, defaulting to 'not given' so that config files can fill them."""
    for section, cls in ((name, SECTIONS[name]) for name in sections):
        group = parser.add_argument_group(f"{section} settings ([{section}] in a config file)")
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if (section, f.name) in NOT_FLAGS | skip:
                continue
            flag = flag_name(section, f.name)
            kwargs: dict[str, Any] = {"dest": f"{section}.{f.name}", "default": argparse.SUPPRESS,
                                      "help": f"{f.metadata['help']} (default: {_show(f.default)})"}
            tp, bounds = hints[f.name], f.metadata.get("range")
            if type(None) in typing.get_args(tp):  # an optional setting's flag takes its value type; unset is None
                tp = next(a for a in typing.get_args(tp) if a is not type(None))
            if tp is bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            elif typing.get_origin(tp) is tuple:
                kwargs.update(type=number(tuple, bounds=bounds), metavar="N,N")
            elif (section, f.name) in REGISTRIES:
                kwargs.update(type=one_of(section, f.name), metavar=f.name.upper())
            else:
                kwargs.update(type=number(tp, bounds=bounds) if bounds else tp, metavar=f.name.split("_")[-1].upper())
            group.add_argument(flag, **kwargs)


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "auto"
    return "the preset's" if value is None else str(value)


def given_settings(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The settings the user gave: the config file's (checked on its own first, so errors name it), then flags."""
    data: dict[str, dict[str, Any]] = read_config_file(args.config) if args.config else {}
    RunConfig.from_dict(data, str(args.config or "config"))
    for key, value in vars(args).items():
        if "." in key:
            section, name = key.split(".")
            data.setdefault(section, {})[name] = list(value) if isinstance(value, tuple) else value
    return data


def run_config_from_args(args: argparse.Namespace) -> RunConfig:
    """Defaults < config file < flags."""
    return RunConfig.from_dict(given_settings(args), "flags")


def resume_conflicts(args: argparse.Namespace, stored: RunConfig) -> list[str]:
    """Given settings (other than --epochs) whose values differ from the run's stored ones, as flag names. A
    value equal to the default ("auto", 0, []) asks for what the run filled in, so it never differs."""
    given = given_settings(args)
    wanted, default = RunConfig.from_dict(given, "flags"), RunConfig()

    def value(config: RunConfig, section: str, name: str) -> Any:
        return getattr(getattr(config, section), name)

    return [f"{flag_name(section, name)} {value(wanted, section, name)!r} (stored: {value(stored, section, name)!r})"
            for section, values in given.items() for name in values if (section, name) != ("train", "epochs")
            and value(wanted, section, name) not in (value(stored, section, name), value(default, section, name))]


class Parser(argparse.ArgumentParser):
    """argparse, with its errors in vaekit's one-line form."""

    def error(self, message: str) -> typing.NoReturn:
        raise VaekitError(f"{message} (see '{self.prog} --help')")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except where there is none to show (None, off switches) or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or "(default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


