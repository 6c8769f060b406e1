"""The script Lamorel's launcher starts in every process (RL processes and LLM servers alike).

Do not run it by hand: ``lamorel-launch --config-name lamorel_cpu`` starts
``python -m lamorel_launcher.launch`` with this script's absolute path, which starts
``n_rl_processes + n_llm_processes`` copies of it through ``accelerate launch``. Each copy composes
the same hydra config, validates it into our :class:`~sac_glam.config.Config`, and then
:func:`sac_glam.backends.lamorel.run_process` makes it an LLM server (serving until closed), RL rank 0
(the training loop, ``train(cfg, backend=LamorelBackend(...))``) or a relaying RL rank.
"""

from __future__ import annotations

import sys
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from sac_glam.config import ConfigError, from_raw


def config_from_hydra(config: DictConfig, name: str) -> Any:
    """Our Config from the composed hydra config (hydra's own keys dropped)."""
    raw = OmegaConf.to_container(config, resolve=True)
    assert isinstance(raw, dict)
    data = {str(k): v for k, v in raw.items() if k not in ("hydra", "defaults")}
    data.setdefault("name", name)
    if not data["name"]:
        data["name"] = name
    return from_raw(data)


@hydra.main(config_path=None, config_name=None, version_base=None)
def main(config: DictConfig) -> None:
    try:
        cfg = config_from_hydra(config, HydraConfig.get().job.config_name or "lamorel")
    except ConfigError as err:
        print(f"lamorel_rl_script: config error: {err}", file=sys.stderr)
        sys.exit(2)
    from sac_glam.backends.lamorel import run_process
    from sac_glam.train import train

    def rl_main(backend: Any) -> None:
        result = train(cfg, backend=backend)
        print(f"done: {result.steps} steps in {result.run_dir}; training success rate "
              f"{result.success_rate:.3f}", flush=True)  # fmt: skip
        for key, value in sorted(result.eval.items()):
            if key.endswith("success_rate"):
                print(f"  {key}: {value:.3f}", flush=True)

    run_process(cfg, rl_main)


if __name__ == "__main__":
    main()
