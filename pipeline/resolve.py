"""Stage `resolve`: the params each of a teacher's stages reads, after presets and overrides, a file a stage.

data/<teacher>/params/<stage>.json holds the resolved values of STAGE_PARAMS[stage] (dd/config.py), and that
stage depends on this file in dvc.yaml. So `dvc exp run -S '++overrides.var-tiny.student.train.train_steps=9000'`
reruns var-tiny's student and what reads its output, not its tokenizer, teacher, pairs or teacher samples.
"""
from dd.checkpoint import save_json
from dd.config import STAGE_PARAMS, Config, stage_params
from dd.layout import Layout


def run(config: Config, layout: Layout, progress: bool = True) -> dict:
    for stage in STAGE_PARAMS:
        save_json(layout.params_dir / f"{stage}.json", stage_params(config, stage))
    return {"stages": list(STAGE_PARAMS)}
