"""drillui's own settings: built once, at the entry point, from the flags and the environment.

Why one model: the state folder, the infrastructure choice and the catalog used to be read from
`os.environ` in several modules, and `--infra` was passed by writing it into the environment.
Now the CLI builds one `DrillSettings` (flags override variables, variables override defaults),
and everything below it gets this object or the environment snapshot it holds; nothing else reads
`os.environ`. The worker has its own model (`worker.settings`): the two never mix, and drill
workers never inherit worker settings from the shell (see `runner.workers`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from drillui.errors import UsageError

Infra = Literal["embedded", "docker"]


class DrillSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=True, populate_by_name=True, frozen=True)

    state_dir: Path | None = Field(None, validation_alias="DRILLUI_STATE_DIR")
    """The embedded stack's state folder (default: a per-user state folder)."""
    infra: Infra = Field("embedded", validation_alias="DRILLUI_INFRA")
    """`embedded` (the default: servers from pip) or `docker` (docker-compose.infra.yml)."""
    scenarios: Path | None = Field(None, validation_alias="DRILLUI_SCENARIOS")
    """The drill catalog (default: ./scenarios.yaml, else the bundled one)."""
    environ: dict[str, str] = Field(default_factory=dict, exclude=True)
    """The process environment as it was when the settings were built: what the stack's URL
    overrides (DATABASE_URL, ES_URL, ...) and the workers' inherited variables are read from."""

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: Any, env_settings: Any,
                                   dotenv_settings: Any, file_secret_settings: Any) -> tuple[Any, ...]:
        # `build` reads the environment mapping it is given (the process's, or a test's): the
        # model itself never looks at os.environ behind its back.
        return (init_settings,)

    @classmethod
    def build(cls, environ: Mapping[str, str] | None = None, **flags: Any) -> DrillSettings:
        """From `environ` (default: this process's), with the flags that were given on top."""
        env = dict(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        for name, alias in (("state_dir", "DRILLUI_STATE_DIR"), ("infra", "DRILLUI_INFRA"), ("scenarios", "DRILLUI_SCENARIOS")):
            if flags.get(name) is not None:
                values[name] = flags[name]
            elif env.get(alias):
                values[name] = env[alias].strip().lower() if name == "infra" else env[alias]
        try:
            return cls.model_validate({**values, "environ": env})
        except ValidationError as exc:
            err = exc.errors()[0]
            field = str(err["loc"][0]) if err["loc"] else "setting"
            alias = {"state_dir": "DRILLUI_STATE_DIR", "infra": "DRILLUI_INFRA", "scenarios": "DRILLUI_SCENARIOS"}.get(field, field)
            raise UsageError(f"{alias}={err.get('input')!r} is not valid: {err['msg']}",
                             hint="DRILLUI_INFRA is embedded or docker" if field == "infra" else None) from None

    def catalog_path(self) -> Path | None:
        if self.scenarios is not None:
            return self.scenarios
        local = Path("scenarios.yaml")
        return local if local.exists() else None
