"""The absl command-line programs (console scripts `avd-*`, see setup.py).

TensorFlow 2.21 leaves its oneDNN CPU kernels off on CPUs without AVX-512
(this project's AMD EPYC machines among them), where they train AVD 4x faster
than the default Eigen kernels (docs/performance.md). The switch is read once,
when TensorFlow is first imported, so the programs turn it on here, before
any of them imports TensorFlow; `TF_ENABLE_ONEDNN_OPTS=0` in the environment
still wins.

Every program runs through `run_program`, so that a bad invocation ends,
like bad input does, in one line "<program>: <flag or file>: <reason>".
"""
import errno
import os
import re
import sys

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def describe(error: BaseException) -> str:
    """An error as one line naming the file: OSError's "[Errno 20] Not a directory: 'x'"
    becomes "x: Not a directory (...)"."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        reason = error.strerror
        if error.errno == errno.ENOTDIR or (error.errno == errno.EEXIST
                                            and not os.path.isdir(error.filename)):
            reason += " (a file stands where the path needs a folder)"
        return f"{error.filename}: {reason}"
    return " ".join(str(error).split())


def _flag_error(error: Exception) -> str:
    """absl's flag errors in our form: "flag --x=None: Flag --x must have a value other than
    None." as "--x: required"."""
    message = " ".join(str(error).split())
    required = re.fullmatch(r"flag (--\w+)=None: Flag --\w+ must have a value other than None\.",
                            message)
    if required:
        return f"{required.group(1)}: required"
    exclusive = re.fullmatch(r"flags .*: (Exactly|At most) one of \((.*)\) must have a value "
                             r"other than None\.", message)
    if exclusive:
        names = ", ".join(f"--{name}" for name in exclusive.group(2).split(", "))
        return f"{names}: give {exclusive.group(1).lower()} one of them"
    return re.sub(r"^flag (--\w+)=", r"\1=", message)


def run_program(name: str, main) -> None:
    """app.run(main), with bad flags, stray arguments and app.UsageError reported as one
    line "<name>: <flag>: <reason>" on stderr (absl prints the help text or a second line)."""
    from absl import app, flags

    def parse(argv):
        try:
            rest = flags.FLAGS(argv)
        except flags.Error as error:
            sys.exit(f"{name}: {_flag_error(error)} (--helpshort lists the flags)")
        if len(rest) > 1:
            sys.exit(f"{name}: unexpected arguments: {' '.join(rest[1:])} "
                     "(flags are written --name=value)")
        return rest

    def checked(argv):
        try:
            return main(argv)
        except app.UsageError as error:
            sys.exit(f"{name}: {error}")

    app.run(checked, flags_parser=parse)
