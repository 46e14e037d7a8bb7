"""The errors a user can act on. Each message names the file, row, field or step at fault; the runner prints it as
one line (`error: ...`) instead of a traceback."""


class SCCLError(Exception):
    """Something the user can fix: bad input or a run that cannot go on."""


class RecipeError(SCCLError, ValueError):
    """A recipe (or its overrides) is wrong; the message names the file and the key."""


class DataError(SCCLError, ValueError):
    """A data file is wrong or holds nothing usable; the message names the file (and the line or row)."""


class TrainingError(SCCLError, RuntimeError):
    """A run that must stop (a non-finite loss, an unusable checkpoint); the message names the step or folder."""


class ModelFolderError(SCCLError, ValueError):
    """A model or tokenizer folder that cannot be used as it is; the message names the folder."""
