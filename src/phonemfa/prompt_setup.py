"""At service start: put every tenant's custom prompts where Asterisk plays them, or refuse.

Every prompt a tenant's callers can hear is checked (recordings exist and decode, shipped
prompts are installed); then its recordings are converted (sox) and its organisation name is
spoken (espeak-ng) into ``<sounds.dir>/phonemfa-custom/<tenant>/<lang>/``. Any error stops the
start with one `PromptSetupError` listing them all: a service that started anyway would play
silence (Asterisk fails a missing file quietly).

Relative recording paths are taken from the working directory, like every other path in the
config (config.py); the catalogs are built that way by the Engine, so what is imported here is
exactly what the flow plays. Errors show absolute paths.

Blocking (subprocesses, files): the Engine runs it in a thread.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from phonemfa.config import Config, TenantSettings, config_line
from phonemfa.messages import MessageType
from phonemfa.prompts import (
    SUPPORTED_LANGUAGES,
    Finding,
    PromptCatalog,
    Shipped,
    check_prompts,
    greeting_message,
    import_tenant_prompts,
    load_shipped,
    unannounced_fraud_code,
)

__all__ = [
    "PromptSetupError",
    "check_config_prompts",
    "fraud_code_of",
    "prepare_prompts",
    "prepare_tenant_prompts",
    "refuse_without_sounds_dir",
    "shipped_prompts",
    "unserved_languages",
    "unspoken_names",
]

log = logging.getLogger("phonemfa.prompts")


class PromptSetupError(RuntimeError):
    """Tenants' prompts that cannot be played; ``findings`` holds every error."""

    def __init__(self, findings: Iterable[Finding]) -> None:
        # Absolute paths: a service started from an unexpected directory says where it looked.
        self.findings = tuple(
            dataclasses.replace(f, path=str(Path(f.path).absolute())) if f.path else f
            for f in findings
        )
        super().__init__(self._message(str(f) for f in self.findings))

    def located(self, config_file: str) -> str:
        """The message with the file:line of each finding's setting where the file has it."""
        return self._message(located(f, config_file) for f in self.findings)

    def _message(self, lines: Iterable[str]) -> str:
        listed = "\n  ".join(lines)
        return f"{len(self.findings)} prompt problem(s), not starting:\n  {listed}\n{_HINT}"


_HINT = "Fix the tenants' prompts settings; `phonemfa prompts check --config FILE` shows them."


def located(finding: Finding, config_file: str) -> str:
    """A finding about a tenant setting (`fraud.code`, a prompt) with the file:line where the
    config file sets it (its tenant's line when the file does not: a stored setting)."""
    if finding.field is None:
        return str(finding)
    line = config_line(config_file, ("tenants", finding.tenant, *finding.field.split(".")))
    return f"{config_file}:{line}: {finding}" if line is not None else str(finding)


def shipped_prompts(sounds_dir: Path | None) -> Shipped:
    """What `make prompts` installed into Asterisk's sounds folder; without access to that
    folder (phonemfa on another host), every shipped message is assumed installed."""
    if sounds_dir is not None:
        return load_shipped(sounds_dir)
    messages = frozenset(m.value for m in MessageType if m is not MessageType.ORGANIZATION_NAME)
    return Shipped(messages={lang: messages for lang in SUPPORTED_LANGUAGES})


def check_config_prompts(config: Config) -> list[Finding]:
    """What prepare_prompts refuses from the config file alone, reading and writing no file
    (check-config): a fraud code the shipped prompts do not announce and, without
    sounds.dir, the tenants that need files installed. With sounds.dir, what serve checks
    is on disk: `phonemfa prompts check` reads it. Returns the warnings it can tell from
    the file (unserved_languages)."""
    shipped = shipped_prompts(None)
    catalogs = {n: PromptCatalog.for_tenant(n, t, shipped) for n, t in config.tenants.items()}
    if config.sounds.dir is None:
        refuse_without_sounds_dir(catalogs, config.tenants)  # the fraud code's check too
    elif errors := _unannounced_fraud_codes(catalogs, config.tenants):
        raise PromptSetupError(errors)  # with sounds.dir too: it needs no file (found by review)
    return unserved_languages(catalogs, config.tenants)


def unserved_languages(
    catalogs: Mapping[str, PromptCatalog], tenants: Mapping[str, TenantSettings]
) -> list[Finding]:
    """Warnings for the tenants whose own language (`language`) no greeting is in: each of
    their calls is greeted in another one (a typo such as `xx-YY`, or a language whose
    recordings are not set). Not an error: a call may ask for any language and fall back."""
    found = []
    for name, catalog in catalogs.items():
        tenant = tenants.get(name)
        if tenant is None:
            continue
        # The greeting of a call without a code (one with a code falls back the same way).
        greeting = greeting_message(fraud=tenant.fraud.enabled, code=False)
        used, fell_back = catalog.language_for(None, tenant.language, greeting)
        if fell_back:
            served = ", ".join(catalog.languages)
            text = (
                f"no greeting in {tenant.language}: every call is greeted in {used} "
                f"(prompts exist in {served}; record them as prompts.{tenant.language}, "
                "or correct language)"
            )
            found.append(
                Finding("warning", name, tenant.language, greeting.value, text, field="language")
            )
    return found


def prepare_prompts(
    config: Config,
    catalogs: Mapping[str, PromptCatalog],
    tenants: Mapping[str, TenantSettings] | None = None,
    *,
    mbrola: bool = True,
) -> list[Finding]:
    """Check, then import, every tenant's prompts, with `tenants` the settings in effect (the
    config's, unless changed through the API: its fraud code goes with its prompts; found by
    review), a tenant kept only from its stored settings too (found by review: on a new
    sounds.dir its recordings were never converted, and nothing said so). Returns the
    warnings (voice fallbacks, long recordings, ...); raises PromptSetupError on any error."""
    configured = {**config.tenants, **(tenants or {})}
    sounds_dir = config.sounds.dir
    if sounds_dir is None:
        refuse_without_sounds_dir(catalogs, configured)
        return unserved_languages(catalogs, configured)  # nothing to write, or to check
    warnings = unserved_languages(catalogs, configured)
    errors: list[Finding] = []
    for name, catalog in catalogs.items():
        tenant = configured.get(name)
        if tenant is None:
            continue  # tenants added at run time are prepared when they are added
        try:
            warnings += prepare_tenant_prompts(catalog, tenant, sounds_dir, mbrola=mbrola)
        except PromptSetupError as exc:
            if name in config.tenants:
                errors += exc.findings
            else:
                # Kept from its stored settings only: said, not a refusal to start, which
                # neither the file (stored settings win) nor the API (down) could then lift
                # (found by review). Its calls fail where a prompt cannot play.
                warnings += exc.findings
    if errors:
        raise PromptSetupError(errors)
    return warnings


def prepare_tenant_prompts(
    catalog: PromptCatalog, tenant: TenantSettings, sounds_dir: Path, *, mbrola: bool = True
) -> list[Finding]:
    """One tenant: check its prompts first (a missing or undecodable recording is reported as
    such, not as a conversion failure), then convert and speak what it needs. Returns the
    warnings; raises PromptSetupError with every error."""
    findings = check_prompts(catalog, sounds_dir, fraud_code=fraud_code_of(tenant))
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        raise PromptSetupError(errors)
    done, problems = import_tenant_prompts(catalog, sounds_dir, mbrola=mbrola)
    for line in done:
        log.info("prompts: %s", line)
    errors = [f for f in problems if f.severity == "error"]
    if errors:
        raise PromptSetupError(errors)
    # A voice fallback is reported by both check and import: once is enough.
    return list(dict.fromkeys(findings + problems))


def fraud_code_of(tenant: TenantSettings) -> str | None:
    """The code the tenant's callers report fraud with; None when they cannot."""
    return tenant.fraud.code if tenant.fraud.enabled else None


def refuse_without_sounds_dir(
    catalogs: Mapping[str, PromptCatalog], tenants: Mapping[str, TenantSettings]
) -> None:
    """Without sounds.dir nothing can be written for Asterisk: a tenant that needs files
    (a recording, a spoken organisation name) would be played as silence; and only shipped
    or Asterisk's sounds play, so a fraud code they do not announce is refused too."""
    errors = [
        Finding(
            "error",
            catalog.tenant,
            lang,
            message,
            "sounds.dir is not set: cannot install this prompt where Asterisk plays it "
            "(set sounds.dir to Asterisk's sounds folder, or use sound:NAME media)",
            source.value if source.kind == "file" else None,
            field=f"prompts.{lang}.{message}",
        )
        for catalog in catalogs.values()
        for lang, message, source in catalog.materialized()
    ]
    errors += [f for catalog in catalogs.values() for f in unspoken_names(catalog)]
    errors += _unannounced_fraud_codes(catalogs, tenants)
    if errors:
        raise PromptSetupError(errors)


def _unannounced_fraud_codes(
    catalogs: Mapping[str, PromptCatalog], tenants: Mapping[str, TenantSettings]
) -> list[Finding]:
    """unannounced_fraud_code for each tenant of `tenants` with a catalog."""
    return [
        f
        for name, catalog in catalogs.items()
        if name in tenants
        for f in unannounced_fraud_code(catalog, fraud_code_of(tenants[name]))
    ]


def unspoken_names(catalog: PromptCatalog) -> list[Finding]:
    """The languages in which the tenant's organization_name would not be heard. Without
    sounds.dir the catalog has no sentence to speak it in (no manifest), so it resolves to
    nothing: the greeting would start without it, silently."""
    if catalog.organization_name is None:
        return []
    org = MessageType.ORGANIZATION_NAME
    text = (
        "sounds.dir is not set: organization_name cannot be spoken where Asterisk plays it "
        "(set sounds.dir to Asterisk's sounds folder, record the name as sound:NAME or "
        "recording:NAME media, "
        "or unset organization_name)"
    )
    return [
        Finding("error", catalog.tenant, lang, org.value, text, field="organization_name")
        for lang in catalog.languages
        if catalog.resolve(org, lang) is None
    ]
