import pytest

from gptlab.study.plan import FAIR_FIELDS, Study, StudyError, load_study, plan, plan_tuned

OVERRIDES = ["train.max_steps=4"]


def write(path, text):
    path.write_text(text)
    return str(path)


def test_runs_go_seed_by_seed_into_directories_named_by_seed(tmp_path):
    runs = plan(Study(["rope", "baseline"], seeds=2, preset="smoke", overrides=OVERRIDES, out=str(tmp_path)))
    assert [r.label for r in runs] == ["rope seed1337", "baseline seed1337", "rope seed1338", "baseline seed1338"]
    assert runs[2].log_dir == tmp_path / "rope" / "seed1338"
    assert all(r.run.train_config.seed == r.seed for r in runs)
    assert runs[0].differs == {"position_encoding_class": ["gptlab.modules.position.LearnedPositionEncoding",
                                                           "gptlab.modules.position.RoPE"]}
    assert runs[1].differs == {} and runs[0].unfair == []


def test_each_run_records_its_difference_from_the_baseline(tmp_path):
    runs = plan(Study(["baseline", "gqa", "swiglu"], preset="smoke", overrides=OVERRIDES, out=str(tmp_path)))
    by_name = {r.experiment: r.differs for r in runs}
    assert by_name["gqa"] == {"model.n_kv_head": [0, 4], "attention_class": ["gptlab.modules.attention.BaseAttention",
                                                                            "gptlab.modules.attention.GQAAttention"]}
    assert set(by_name["swiglu"]) == {"mlp_class"}


def test_an_experiment_that_changes_the_recipe_is_refused_naming_it_and_the_fields(tmp_path):
    exp = write(tmp_path / "hot.py", "from gptlab import TrainingConfig\nfrom gptlab.modules import RoPE\n"
                                     "POSITION_ENCODING_CLASS = RoPE\n"
                                     "TRAINING_CONFIG = TrainingConfig(max_lr=1e-3, val_tokens=4096, seed=7, "
                                     "micro_batch_size=32)\n")
    study = Study(["baseline", exp], preset="gpt2", overrides=OVERRIDES, out=str(tmp_path / "runs"))
    with pytest.raises(StudyError, match=r"hot changes train.max_lr \(0.0006 -> 0.001\)") as error:
        plan(study)
    message = str(error.value)
    assert "--allow-unfair" in message and "Nothing was trained" in message
    assert "seed" not in message.split("changes")[1] and "micro_batch_size" not in message  # free to differ
    assert not (tmp_path / "runs").exists()


def test_the_preset_and_overrides_apply_to_every_run_so_they_cannot_make_it_unfair(tmp_path):
    exp = write(tmp_path / "lr.py", "from gptlab import TrainingConfig\nfrom gptlab.modules import RoPE\n"
                                    "POSITION_ENCODING_CLASS = RoPE\nTRAINING_CONFIG = TrainingConfig(max_lr=1e-3)\n")
    runs = plan(Study(["baseline", exp], preset="smoke", overrides=OVERRIDES + ["train.max_lr=2e-3"],
                      out=str(tmp_path)))
    assert all(r.run.train_config.max_lr == 2e-3 and not r.unfair for r in runs)


def test_allow_unfair_trains_it_and_says_which_fields(tmp_path):
    exp = write(tmp_path / "long.py", "from gptlab import TrainingConfig\nfrom gptlab.modules import RoPE\n"
                                      "POSITION_ENCODING_CLASS = RoPE\nTRAINING_CONFIG = TrainingConfig(warmup_steps=100)\n")
    study = Study(["baseline", exp], preset="smoke", overrides=["train.max_steps=4"], out=str(tmp_path),
                  allow_unfair=True)
    # the smoke preset sets warmup_steps=5 after the file: the file's value is overridden, so still fair
    assert all(not r.unfair for r in plan(study))
    exp2 = write(tmp_path / "eval.py", "from gptlab import TrainingConfig\n"
                                       "TRAINING_CONFIG = TrainingConfig(hellaswag_limit=10)\n")
    runs = plan(Study(["baseline", exp2], preset="gpt2", overrides=["train.max_steps=4"], out=str(tmp_path),
                      allow_unfair=True))
    assert [r.unfair for r in runs] == [[], ["hellaswag_limit"]]


def test_fair_fields_cover_data_tokens_schedule_batch_and_evaluation():
    for name in ("data", "data_dir", "max_steps", "total_batch_size", "sequence_length", "max_lr", "warmup_steps",
                 "val_tokens", "eval_interval", "hellaswag", "hellaswag_limit", "weight_decay"):
        assert name in FAIR_FIELDS
    assert "seed" not in FAIR_FIELDS and "micro_batch_size" not in FAIR_FIELDS


def test_study_files_and_their_mistakes(tmp_path):
    study = load_study("quick")
    assert study.experiments == ["baseline", "rope"] and study.seeds == 5
    assert study.root.parts[-2:] == ("log_train", "quick") and study.baseline == "baseline"
    bad = write(tmp_path / "bad.py", "EXPERIMENTS = ['rope']\nSEED = 3\n")
    with pytest.raises(StudyError, match="SEED is not a study setting; did you mean SEEDS"):
        load_study(bad)
    with pytest.raises(StudyError, match="no study named 'quik'; did you mean quick"):
        load_study("quik")
    with pytest.raises(StudyError, match="baseline 'gqa' is not among the experiments"):
        Study(["rope", "alibi"], baseline="gqa")
    with pytest.raises(StudyError, match="experiment 'ropee' of study study cannot run: no experiment named"):
        plan(Study(["baseline", "ropee"], preset="smoke"))


def test_the_readme_study_plans_ten_fair_runs():
    runs = plan(load_study("quick"))
    assert len(runs) == 10 and not any(r.unfair for r in runs)
    assert {r.run.preset for r in runs} == {"smoke"} and {r.seed for r in runs} == set(range(1337, 1342))


def test_a_learning_rate_sweep_goes_first_then_the_seeds_then_the_tuned_rates(tmp_path):
    study = Study(["baseline", "rope"], seeds=3, preset="smoke", overrides=OVERRIDES, out=str(tmp_path),
                  lr_sweep=[0.5, 2, 1])
    runs = plan(study)
    assert [r.label for r in runs] == [
        "baseline lr x0.5 seed1337", "baseline seed1337", "baseline lr x2 seed1337",
        "rope lr x0.5 seed1337", "rope seed1337", "rope lr x2 seed1337",
        "baseline seed1338", "rope seed1338", "baseline seed1339", "rope seed1339"]
    swept = runs[2]
    assert swept.log_dir == tmp_path / "baseline" / "lr2" / "seed1337" and swept.run.train_config.max_lr == 6e-3
    assert swept.overrides[-1] == "train.max_lr=0.006" and runs[1].overrides == OVERRIDES
    assert runs[1].log_dir == tmp_path / "baseline" / "seed1337"  # multiplier 1: the shared-rate run itself
    assert swept.record(study)["run"] == "baseline/lr2/seed1337" and swept.record(study)["first_seed"] == 1337
    tuned = plan_tuned(study, {"baseline": 1.0, "rope": 2.0})
    # three seeds at each tuned rate, none the sweep's own (picked for its low loss): 1338, 1339 and one more;
    # the baseline's at x1 are the shared runs but for the last
    assert [r.label for r in tuned] == ["baseline seed1338", "rope lr x2 seed1338", "baseline seed1339",
                                        "rope lr x2 seed1339", "baseline seed1340", "rope lr x2 seed1340"]
    assert tuned[0].log_dir == runs[6].log_dir and tuned[4].log_dir == tmp_path / "baseline" / "seed1340"
    for bad, phrase in (([1, 2], "at least 3 different multipliers"), ([0.5, -1, 2], "must be positive"),
                        (["0.5", 1, 2], "a list of multipliers")):
        with pytest.raises(StudyError, match=phrase):
            Study(["baseline", "rope"], lr_sweep=bad)


def test_a_variant_the_preset_turned_into_the_baseline_is_refused(tmp_path):
    exp = write(tmp_path / "four.py", "from gptlab import GPTConfig\nMODEL_CONFIG = GPTConfig(n_head=4)\n")
    with pytest.raises(StudyError, match=r"four: its MODEL_CONFIG's n_head=4 \(now 8\) replaced by the preset smoke"):
        plan(Study(["baseline", exp], preset="smoke", overrides=OVERRIDES, out=str(tmp_path)))
    # given for every run, it is the baseline's too: still the same model; as the file's alone it differs
    assert len(plan(Study(["baseline", exp], preset="gpt2", overrides=OVERRIDES, out=str(tmp_path)))) == 2


def test_study_settings_of_the_wrong_type_are_named(tmp_path):
    for text, phrase in (("EXPERIMENTS = 'rope'\n", "experiments must be a list of names"),
                         ("EXPERIMENTS = ['rope']\nOVERRIDES = 'train.max_steps=4'\n", "overrides must be a list"),
                         ("EXPERIMENTS = ['rope']\nSEEDS = True\n", "seeds=True"),
                         ("EXPERIMENTS = ['rope']\nALLOW_UNFAIR = 'no'\n", "allow_unfair='no'")):
        with pytest.raises(StudyError, match=phrase):
            load_study(write(tmp_path / "s.py", text))


def test_sweep_multipliers_that_would_share_a_directory_are_refused(tmp_path):
    for sweep, phrase in (([0.71, 0.7100001, 1, 2], "0.71 and 0.7100001 are one multiplier"),
                          ([0.5, 1.0000001, 2], "1.0 and 1.0000001 are one multiplier")):
        with pytest.raises(StudyError, match=phrase):
            Study(["baseline", "rope"], lr_sweep=sweep, out=str(tmp_path))


def test_two_experiment_files_of_one_name_are_refused(tmp_path):
    (tmp_path / "x").mkdir()
    exp = write(tmp_path / "x" / "rope.py", "from gptlab.modules import ALiBi\nPOSITION_ENCODING_CLASS = ALiBi\n")
    with pytest.raises(StudyError, match="have one name, so their runs would share a directory: rope and"):
        plan(Study(["baseline", "rope", exp], preset="smoke", overrides=OVERRIDES, out=str(tmp_path)))
