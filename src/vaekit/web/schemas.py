"""The explorer API's limits and request bodies. Two of them depend on the models served: the model name is an
enum of their names, and a latent vector's length is their latent size, so the OpenAPI schema states both."""

from enum import Enum

from pydantic import BaseModel, Field

from vaekit.config import ModelConfig, field_range
from vaekit.models import Autoencoder

MAX_BODY = 2 * 2**20  # bytes in any request
MAX_UPLOAD_PIXELS = 4096 * 4096
MAX_N = 64
Z_LIMIT = 100.0  # |z_i| beyond this is no code any decoder has seen; refused rather than decoded to noise


LABEL = "the class a conditional model draws (its index; see /api/models); unconditional models ignore it"
MAX_LABEL = int(field_range(ModelConfig, "classes")[1])  # a label past a model's own count: refused by the handler


class SampleRequest(BaseModel):
    n: int = Field(8, ge=1, le=MAX_N, description="images per model")
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="seed of the z draws; none: random")
    label: int | None = Field(None, ge=0, le=MAX_LABEL, description=LABEL + "; none: the classes in turn")


class InterpolateRequest(BaseModel):
    a: int = Field(..., ge=0, description="index of a test image (see /api/test-images)")
    b: int = Field(..., ge=0, description="index of another test image")
    steps: int = Field(8, ge=2, le=32)


def model_names(models: dict[str, Autoencoder]) -> type[Enum]:
    """An enum of the served models' names, for request fields and query parameters that name a model."""
    return Enum("ModelName", {name: name for name in models}, type=str)


def decode_request(models: dict[str, Autoencoder], names: type[Enum]) -> type[BaseModel]:
    """The body of /api/decode: a model name and one latent vector. With one latent size among the models the
    schema fixes the length; otherwise it allows 1 to 1024 values and the handler checks the model's size."""
    dims = {m.latent_dim for m in models.values()}
    shortest, longest = (min(dims), min(dims)) if len(dims) == 1 else (1, 1024)

    class DecodeRequest(BaseModel):
        model: names = Field(..., description="a name from /api/models")
        z: list[float] = Field(..., description="one latent vector", min_length=shortest, max_length=longest)
        label: int | None = Field(None, ge=0, le=MAX_LABEL, description=LABEL)

    return DecodeRequest
