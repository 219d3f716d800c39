"""The error boundary every command runs behind: a mistake in what the user typed or gave
(a config value, an override, a checkpoint, a file) ends in one line

    error: <key or path>: <what is wrong>; <how to fix it>

and exit code 2; a genuine bug still shows its traceback (as does everything with
``HYDRA_FULL_ERROR=1``). Inside a multirun a job's error goes to the sweeper, which records the
trial as failed."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf.errors import OmegaConfBaseException

from nkat_lightning.config.compose import in_multirun
from nkat_lightning.config.schema import omegaconf_message
from nkat_lightning.errors import UserError
from nkat_lightning.quiet import quiet_third_party_noise
from nkat_lightning.training.run_lock import RunFolderInUse, remove_if_empty_run_folder

HYDRA_NOISE = ("Set the environment variable HYDRA_FULL_ERROR", "full_key:", "object_type=",
               "reference_type=")


def hydra_message(error: HydraException) -> str:
    cause = error.__cause__
    if isinstance(cause, OmegaConfBaseException):
        return omegaconf_message(cause)
    if isinstance(error, MissingConfigException) and error.missing_cfg_file:
        group, _, name = error.missing_cfg_file.rpartition("/")
        options = [o for o in error.options or [] if not o.endswith("schema")]
        return (f"{group or 'config'}: there is no '{name}'; give one of {', '.join(options)}"
                if options else str(error).splitlines()[0])
    lines = [line.strip() for line in str(error).splitlines()
             if line.strip() and not line.strip().startswith(HYDRA_NOISE)]
    if isinstance(error, OverrideParseException):
        lines = lines[1:] or lines  # the first repeats the whole command line
    return "; ".join(lines) if lines else type(error).__name__


def is_lightning_refusal(error: BaseException) -> bool:
    """Lightning's ``MisconfigurationException``, checked without importing Lightning (a
    command's ``--help`` and config errors answer before the training stack is loaded)."""
    exceptions = sys.modules.get("lightning.fabric.utilities.exceptions")
    return exceptions is not None and isinstance(error, exceptions.MisconfigurationException)


def user_message(error: BaseException) -> str | None:
    """The one line for an error the user can fix, or None for a bug."""
    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, HydraException):
        return hydra_message(error)
    if isinstance(error, OmegaConfBaseException):
        return omegaconf_message(error)
    if is_lightning_refusal(error):  # Lightning refusing a trainer setting
        return f"trainer: {str(error).splitlines()[0]}; fix the trainer setting it names"
    if isinstance(error, FileNotFoundError | PermissionError | IsADirectoryError) and \
            error.filename:
        return f"{error.filename}: {error.strerror}; check the path"
    return None


USER_FULL_ERROR: list[bool] = []  # the user's own HYDRA_FULL_ERROR while hydra_raises holds


def tracebacks_wanted() -> bool:
    return USER_FULL_ERROR[-1] if USER_FULL_ERROR else os.environ.get("HYDRA_FULL_ERROR") == "1"


@contextlib.contextmanager
def hydra_raises():
    """Let Hydra raise its composition errors (``HYDRA_FULL_ERROR``) instead of printing
    them, so that the boundary words them."""
    before = os.environ.get("HYDRA_FULL_ERROR")
    USER_FULL_ERROR.append(before == "1")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    finally:
        USER_FULL_ERROR.pop()
        if before is None:
            del os.environ["HYDRA_FULL_ERROR"]
        else:
            os.environ["HYDRA_FULL_ERROR"] = before


def exit_with_user_message(error: Exception) -> None:
    """Print the one line and exit 2 when ``error`` is the user's to fix; return otherwise."""
    message = None if tracebacks_wanted() else user_message(error)
    if message is not None:
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def command(main):
    """Run a command's ``main`` behind the boundary (for a Hydra app, around ``@hydra.main``,
    where it meets composition errors)."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        quiet_third_party_noise()
        try:
            with hydra_raises():
                return main(*args, **kwargs)
        except Exception as error:
            exit_with_user_message(error)
            raise

    return wrapper


def job(task):
    """The boundary inside a Hydra app's task function: a single run exits there (before
    Hydra reports the job as failed), leaving no run folder that holds only Hydra's own files;
    in a multirun the error goes to the sweeper."""

    @functools.wraps(task)
    def wrapper(cfg):
        try:
            return task(cfg)
        except Exception as error:
            if not in_multirun():
                if isinstance(error, UserError) and not isinstance(error, RunFolderInUse) and \
                        HydraConfig.initialized():  # never another live run's folder
                    remove_if_empty_run_folder(Path(HydraConfig.get().runtime.output_dir))
                exit_with_user_message(error)
            raise

    return wrapper
