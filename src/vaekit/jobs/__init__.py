"""Jobs: the commands' work between evaluation and the pages. A job trains or loads models, measures them through
evaluation/, and writes its folder (claimed, locked, whole or not at all); it renders no page itself, it is handed the
renderer (report/), so report/ only renders."""
