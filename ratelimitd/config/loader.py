"""YAML files and directories -> a validated, immutable Config.

The format is envoyproxy/ratelimit's, unchanged, plus optional per-rule extensions
(`algorithm`, `burst`, `failure_mode`) and per-tenant quotas (`tenant_key`, `plans`,
`default_plan`, `tenants`; a file of only `domain` and `tenants` adds to another's). Every
problem is reported with its file and line, and all problems of all files are reported at
once rather than stopping at the first.
"""

from __future__ import annotations

import gc
import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from ratelimitd.config import plans
from ratelimitd.config.domain_file import DomainFile
from ratelimitd.config.errors import ConfigError, InvalidConfigError
from ratelimitd.model.rules import Config, Defaults, Domain, Rule

CONFIG_SUFFIXES = (".yaml", ".yml")
MAX_ERRORS = 100  # reported at most, then how many more


def discover(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[ConfigError]]:
    """Expand files and directories into config files, in a stable order.

    Directories are walked recursively in sorted order; dot-files and dot-directories are
    skipped so a Kubernetes ConfigMap mount (with its `..data` directory) loads each file once.
    """
    files: list[Path] = []
    errors: list[ConfigError] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        resolved = path.resolve()
        if resolved not in seen:
            seen.add(resolved)
            files.append(path)

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = []
            for root, dirs, names in os.walk(path, followlinks=True):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                found += [
                    Path(root) / name
                    for name in names
                    if not name.startswith(".") and name.endswith(CONFIG_SUFFIXES)
                ]
            for file in sorted(found, key=lambda f: f.relative_to(path).parts):
                add(file)
        elif path.is_file():
            add(path)
        else:
            errors.append(ConfigError(str(path), None, "no such file or directory"))
    return files, errors


def file_hash(data: bytes) -> bytes:
    """The hash of one file's contents that ContentDigest takes."""
    return hashlib.sha256(data).digest()


class ContentDigest:
    """SHA-256 over config files' paths and contents, in load order: the same digest means the
    same files with the same bytes, so the same rules."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()

    def add(self, path: str, content_hash: bytes) -> None:
        """Add one file: its path as discovered and the file_hash of its bytes."""
        name = os.fsencode(path)
        self._sha.update(len(name).to_bytes(8, "big") + name + content_hash)

    def hexdigest(self) -> str:
        """The digest of every file added so far."""
        return self._sha.hexdigest()


def load_config(
    paths: Sequence[str | os.PathLike[str]], defaults: Defaults | None = None
) -> Config:
    """Load and validate the config files under `paths`; raise InvalidConfigError if any fail.

    `defaults` are the command line's; a file's `defaults:` block overrides them for its rules.
    """
    # A large config creates hundreds of thousands of objects, none of them cyclic: the
    # cyclic collector would only walk them again and again (twice the load time, and pauses
    # that stall the event loop of a server reloading in a thread).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _load(paths, defaults)
    finally:
        if collecting:
            gc.enable()


def _load(paths: Sequence[str | os.PathLike[str]], defaults: Defaults | None) -> Config:
    files, errors = discover(paths)
    if not files and not errors:
        errors.append(
            ConfigError(", ".join(map(str, paths)) or "--config", None, "no config files")
        )
    parsers: list[DomainFile] = []
    digest = ContentDigest()
    for path in files:
        parser = DomainFile(str(path), defaults or Defaults())
        try:
            data = path.read_bytes()
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(ConfigError(str(path), None, f"cannot read file: {exc}"))
            continue
        digest.add(str(path), file_hash(data))
        if parser.read(text):
            parsers.append(parser)
        errors.extend(parser.errors)
    domains, rules = _build_domains(parsers, errors)
    if len(errors) > MAX_ERRORS:
        # A generated tenant list can fail on every line: the first ones say what is wrong.
        rest = errors[MAX_ERRORS:]
        errors = errors[:MAX_ERRORS]
        errors.append(ConfigError(rest[0].file, None, f"{len(rest)} more errors not shown"))
    if errors:
        raise InvalidConfigError(errors)
    return Config(
        domains=domains,
        rules=tuple(rules),
        files=tuple(str(f) for f in files),
        digest=digest.hexdigest(),
        warnings=tuple(str(w) for parser in parsers for w in parser.warnings),
    )


def _build_domains(
    parsers: Sequence[DomainFile], errors: list[ConfigError]
) -> tuple[dict[str, Domain], list[Rule]]:
    """Each domain from the file that defines it, with the tenants of the tenant lists (files
    of only `domain` and `tenants`) for it added."""
    main: dict[str, DomainFile] = {}
    tenant_lists: dict[str, list[DomainFile]] = {}
    for parser in parsers:
        if parser.is_tenant_list:
            tenant_lists.setdefault(parser.domain, []).append(parser)
            continue
        first = main.get(parser.domain)
        if first is not None:
            errors.append(
                ConfigError(
                    parser.file,
                    parser.domain_source.line,
                    f"duplicate domain '{parser.domain}' (already defined at "
                    f"{first.domain_source})",
                )
            )
            reported = len(parser.errors)
            parser.build()  # for the errors of its own, reported all at once as always
            errors.extend(parser.errors[reported:])
            continue
        main[parser.domain] = parser
    domains: dict[str, Domain] = {}
    rules: list[Rule] = []
    for name, lists in tenant_lists.items():
        if name not in main:
            for parser in lists:
                errors.append(
                    ConfigError(
                        parser.file,
                        parser.domain_source.line,
                        f"tenants for domain '{name}', but no file defines its plans",
                    )
                )
    for name, parser in main.items():
        extra: list[plans.TenantSpec] = []
        for other in tenant_lists.get(name, ()):
            reported = len(other.errors)  # those of reading it are in already
            extra += other.tenant_specs()
            errors.extend(other.errors[reported:])
        reported = len(parser.errors)
        domains[name] = parser.build(extra)
        errors.extend(parser.errors[reported:])
        rules.extend(parser.rules)
    return domains, rules


def check_paths(paths: Sequence[str | os.PathLike[str]]) -> list[ConfigError]:
    """Validate config files and return their errors (empty when valid)."""
    return check_files(paths)[0]


def check_files(paths: Sequence[str | os.PathLike[str]]) -> tuple[list[ConfigError], list[str]]:
    """Validate config files: their errors (empty when valid), and the warnings of valid ones
    (`file:line: message`)."""
    try:
        config = load_config(paths)
    except InvalidConfigError as exc:
        return list(exc.errors), []
    return [], list(config.warnings)
