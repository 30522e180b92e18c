"""Locating Java for the metrics that run a jar (PTB tokenizer, METEOR, SPICE)."""
import functools
import re
import shutil
import subprocess

MIN_JAVA = 8


class JavaError(RuntimeError):
    """Java is missing or too old for a Java-backed metric."""


@functools.lru_cache(maxsize=1)
def java_version() -> tuple[str | None, int | None]:
    """Return ``(java executable, major version)``; ``(None, None)`` without Java on PATH.

    Asked once per process: starting a JVM costs a fraction of a second.
    """
    exe = shutil.which("java")
    if exe is None:
        return None, None
    try:
        out = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return exe, None
    # `java -version` writes to stderr: 'version "1.8.0_292"' (Java 8) or 'version "17.0.15"' (9+).
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match is None:
        return exe, None
    major = int(match.group(1))
    if major == 1 and match.group(2) is not None:
        major = int(match.group(2))
    return exe, major


def require_java(what: str) -> str:
    """Return the java executable, or raise :class:`JavaError` saying what ``what`` needs."""
    exe, major = java_version()
    if exe is None:
        raise JavaError(
            f"{what} needs Java {MIN_JAVA} or newer, but no 'java' was found on PATH. "
            f"Install a Java runtime (JRE/JDK >= {MIN_JAVA}) and make 'java' available on PATH."
        )
    if major is None or major < MIN_JAVA:
        found = "an unreadable version" if major is None else f"Java {major}"
        raise JavaError(
            f"{what} needs Java {MIN_JAVA} or newer, but '{exe}' is {found}. "
            f"Install a Java runtime >= {MIN_JAVA} and put it first on PATH."
        )
    return exe
