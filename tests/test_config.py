"""params.yaml validation: unknown keys and wrong types are errors naming the key."""
import dataclasses

import pytest
import yaml

from dd.config import Config, ConfigError, StudentConfig, config_from_dict, load_config, resolve


def test_project_params_load():
    config = load_config("params.yaml")
    assert "llamagen-tiny" in config.teachers
    assert config.student.timesteps[0] == 0


def test_defaults_and_nested_sections():
    config = config_from_dict({"student": {"steps": 2, "train": {"train_steps": 7}}})
    assert config.student.steps == 2 and config.student.train.train_steps == 7
    assert config.student.train.batch_size == Config().student.train.batch_size
    assert config_from_dict({"recipe": {"cfg_scale": 2}}).recipe.cfg_scale == 2.0   # int accepted for float


@pytest.mark.parametrize("params, key", [
    ({"studnet": {}}, "studnet"),
    ({"student": {"stepz": 2}}, "student.stepz"),
    ({"student": {"train": {"lr": 1}}}, "student.train.lr"),
])
def test_unknown_key_is_named(params, key):
    with pytest.raises(ConfigError, match=f"unknown params key '{key}'"):
        config_from_dict(params)


@pytest.mark.parametrize("params, key", [
    ({"student": {"steps": "2"}}, "student.steps"),
    ({"pairs": {"num_pairs": 1.5}}, "pairs.num_pairs"),
    ({"teacher": {"train": {"precision": True}}}, "teacher.train.precision"),
    ({"student": {"timesteps": 32}}, "student.timesteps"),
    ({"student": {"train": 3}}, "student.train"),
])
def test_wrong_type_is_named(params, key):
    with pytest.raises(ConfigError, match=f"params key '{key}' must be"):
        config_from_dict(params)


def test_invalid_values_are_rejected():
    with pytest.raises(ConfigError, match="student.steps"):
        config_from_dict({"student": {"steps": 3}})
    with pytest.raises(ConfigError, match="student.timesteps"):
        config_from_dict({"student": {"timesteps": [16, 32]}})
    with pytest.raises(ConfigError, match=r"student.timesteps \(2 steps\): .* above 0"):
        config_from_dict({"student": {"steps": 2, "timesteps": [0, 0]}})   # a repeat is not an intermediate step
    with pytest.raises(ConfigError, match="student.train.precision: use 'fp32', 'bf16' or 'auto'"):
        config_from_dict({"student": {"train": {"precision": "fp16"}}})
    with pytest.raises(ConfigError, match=r"sample.precision: use 'fp32', 'bf16' or 'auto' \(bf16 on CUDA"):
        config_from_dict({"sample": {"precision": "fp16"}})
    for hybrid in ({"teacher_steps": 8}, {"steps": 2, "teacher_steps": 33}, {"steps": 2, "teacher_steps": -1}):
        with pytest.raises(ConfigError, match="student.teacher_steps: hybrid sampling needs steps: 2"):
            config_from_dict({"student": hybrid})


@pytest.mark.parametrize("key, value", [("top_p", 0.0), ("top_p", 1.5), ("temperature", 0.0), ("temperature", -1.0),
                                        ("top_k", -1), ("cfg_scale", -0.5)])
def test_a_recipe_that_makes_no_distribution_is_rejected_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=f"invalid value for recipe.{key}: "):
        config_from_dict({"recipe": {key: value}})
    data = {"teachers": ["var-tiny"], "overrides": {"var-tiny": {"recipe": {key: value}}}}
    with pytest.raises(ConfigError, match=f"recipe.{key}.*resolving params for teacher 'var-tiny'"):
        resolve(data, "var-tiny")


def test_config_is_frozen(tmp_path):
    config = load_config("params.yaml")
    with pytest.raises(Exception):
        config.student.steps = 2
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"bogus": 1}))
    with pytest.raises(ConfigError, match="unknown params key 'bogus'"):
        load_config(path)


def test_student_timesteps_measured_once_each_and_second_step_from_the_largest():
    student = StudentConfig(timesteps=(0, 32, 8, 32))
    assert student.distinct_timesteps == (0, 8, 32)                   # a repeat only weights the training draw
    assert student.intermediate_timestep == 32


def test_sampling_steps_count_the_student_calls_and_the_teachers_steps_between():
    assert StudentConfig(steps=1).sampling_steps == 1 and StudentConfig(steps=2).sampling_steps == 2
    assert StudentConfig(steps=2, teacher_steps=8).sampling_steps == 1 + 8 + 1      # pre-trained-24-32
    assert StudentConfig(steps=2, teacher_steps=32).sampling_steps == 32 + 1        # the first call is skipped


def test_var_tiny_resolves_its_overrides_over_the_shared_sections():
    config, shared = load_config("params.yaml", "var-tiny"), load_config("params.yaml", "llamagen-tiny")
    assert config.student.timesteps == (0, 3, 3)                      # scales, not tokens; t = 3 trained 2x as often
    assert config.student.distinct_timesteps == (0, 3) and config.student.intermediate_timestep == 3
    assert config.vqvae.preset == "vae-tiny" and config.vqvae.commitment == 0.25
    assert config.recipe == dataclasses.replace(shared.recipe, top_k=8)  # its own top-k; the rest shared
    assert shared.recipe.top_k == 64 and config.student.steps == shared.student.steps
    assert shared.student.timesteps == (0, 32)                        # llamagen-tiny is untouched by var-tiny's entry
    with pytest.raises(ConfigError, match="overrides.<teacher>.vqvae"):
        resolve({"vqvae": {"commitment": 0.5}}, "var-tiny")                # only per teacher
