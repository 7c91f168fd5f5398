"""Composition of conf/ with real Hydra, and validation of the composed config (in process)."""

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import open_dict

from nnexp import config
from nnexp.engine import components, data
from nnexp.grammar import Overrides
from nnexp.run import CONF

GROUPS = {
    "cost": components.COSTS,
    "activation": components.ACTIVATIONS,
    "init": components.INITIALIZERS,
    "regularization": components.REGULARIZERS,
    "data": data.DATASETS,
}


@pytest.mark.parametrize("group", GROUPS)
def test_conf_has_one_file_per_engine_name(group):
    assert sorted(path.stem for path in (CONF / group).glob("*.yaml")) == sorted(GROUPS[group])


@pytest.mark.parametrize("group,option", [(g, o) for g, names in GROUPS.items() for o in names])
def test_every_group_option_composes_and_validates(composer, group, option):
    c = config.validate(composer(f"{group}={option}"))
    assert getattr(c, group).name == option


def test_default_is_chapter_3_network(composer):
    c = config.validate(composer())
    assert (c.cost.name, c.activation.name, c.init.name) == ("crossentropy", "sigmoid", "scaled")
    assert (c.regularization.name, c.regularization.lmbda) == ("l2", 5.0)
    assert (c.data.name, c.data.train_size, c.data.expand, c.model.hidden) == ("mnist", None, False, [30])
    assert (c.train.eta, c.train.batch_size, c.train.epochs, c.train.momentum) == (0.5, 10, 30, 0.0)
    assert (c.train.schedule, c.train.early_stopping, c.seed, c.dtype) == ("constant", None, 0, "float32")
    assert c.tracking.experiment == "nnexp"


def test_dropout_combines_with_l2(composer):
    c = config.validate(composer("regularization=dropout", "regularization.lmbda=0.1"))
    assert (c.regularization.name, c.regularization.p, c.regularization.lmbda) == ("dropout", 0.5, 0.1)


def test_experiment_is_a_global_package(composer):
    c = config.validate(composer("experiment=smoke"))
    assert (c.data.train_size, c.train.epochs) == (1000, 3)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["train.eta=0"], "invalid train.eta=0.0: accepted a number > 0"),
        (["train.batch_size=0"], "invalid train.batch_size=0"),
        (["train.epochs=0"], "invalid train.epochs=0"),
        (["train.momentum=1"], "invalid train.momentum=1.0"),
        (["train.schedule=cosine"], "invalid train.schedule=cosine: accepted one of constant, halve"),
        (["train.early_stopping=0"], "invalid train.early_stopping=0"),
        (["train.backend=cuda"], "invalid train.backend=cuda: accepted one of auto, numpy, numba"),
        (["model.hidden=[30,0]"], "invalid model.hidden=[30,0]"),
        (["data.train_size=50001"], "accepted null (all) or an integer from 1 to 50000 for mnist"),
        (["data=digits", "data.train_size=1001"], "from 1 to 1000 for digits"),
        (["regularization.lmbda=-0.1"], "invalid regularization.lmbda=-0.1"),
        (["regularization=dropout", "regularization.p=1.0"], "invalid regularization.p=1.0: accepted a prob"),
        (
            ["cost.name=cubic"],
            "invalid cost.name=cubic: accepted one of quadratic, crossentropy, loglikelihood",
        ),
        (["dtype=float16"], "invalid dtype=float16"),
        (["train.eta=inf"], "invalid train.eta=inf: accepted a number > 0"),
        (["seed=-1"], "invalid seed=-1: accepted an integer >= 0"),
        (["resume=run1"], "invalid resume=run1: accepted null or the id of a run or sweep"),
    ],
)
def test_out_of_range_values_are_named(composer, overrides, message):
    with pytest.raises(config.ConfigError) as error:
        config.validate(composer(*overrides))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "override,message",
    [
        ("+train.etaa=1", "unknown key train.etaa (accepted: eta, epochs, batch_size,"),
        ("+colour=red", "unknown key colour (accepted: cost, activation,"),
        ("train.eta=???", "invalid train.eta=???: accepted a number > 0"),
    ],
)
def test_what_composes_but_the_schema_refuses_is_named(composer, override, message):
    """Hydra composes a key added with ``+`` and a value left ``???``: validate refuses them."""
    with pytest.raises(config.ConfigError) as error:
        config.validate(composer(override))
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.epochs=abc", "invalid train.epochs='abc': accepted an integer >= 1"),
        ("model.hidden=[30,abc]", "invalid model.hidden[1]='abc': accepted a list of layer sizes"),
        ("train.eta=null", "invalid train.eta=null: accepted a number > 0"),
        ("train.etaa=1", "unknown key train.etaa (accepted: eta, epochs, batch_size,"),
        ("cost=cubic", "unknown cost 'cubic' (accepted: crossentropy, loglikelihood, quadratic)"),
        ("experiment=nope", "unknown experiment 'nope' (accepted: "),
        ("tracking=3", "invalid tracking=3: accepted one key at a time: tracking.experiment"),
        ("hydra.job.chdir=abc", "invalid hydra.job.chdir='abc': accepted null or true or false"),
        (
            "search=ch3_eta_lmbda hydra.sweeper.n_trials=abc",
            "invalid hydra.sweeper.n_trials='abc': accepted an integer",
        ),
        (
            "search=ch3_eta_lmbda hydra.sweeper.direction=up",
            "invalid hydra.sweeper.direction='up': accepted one of",
        ),
    ],
)
def test_hydra_errors_are_described_in_one_line(composer, override, message):
    """In nnexp's words: what the key accepts, from its ``Accepts`` or, for Hydra's and the search's
    settings and the groups of keys, from its type."""
    with pytest.raises(ConfigCompositionException) as error:
        composer(*override.split())
    assert config.describe(error.value).startswith(message)
    assert "\n" not in config.describe(error.value)


def test_an_unknown_key_is_offered_the_keys_a_user_may_set(composer):
    """At the root: the schema's keys and every group of conf/ (presets too), but not the internal trial."""
    with pytest.raises(ConfigCompositionException) as error:
        composer("seeed=1")
    offered = config.describe(error.value).partition("(accepted: ")[2].rstrip(")").split(", ")
    groups = {path.name for path in CONF.iterdir() if path.is_dir()} - {"hydra"}
    assert groups <= set(offered) and {"experiment", "search", "seed", "resume"} <= set(offered)
    assert "trial" not in offered


def with_sweep(cfg, *overrides, sweeper=None):
    """``cfg`` as the launching process of ``python -m nnexp.run -m *overrides`` sees it."""
    with open_dict(cfg):
        cfg.hydra.overrides.task = list(overrides)
        if sweeper is not None:
            cfg.hydra.sweeper._target_ = sweeper
    return cfg


def test_sweep_jobs_expand_lists_choice_range_and_glob_in_hydra_order(composer):
    cfg = with_sweep(
        composer("experiment=ch1_learning_rate"),
        "experiment=ch1_learning_rate",
        "model.hidden=[30],[100]",
        "train.eta=choice(0.5,1.0)",
        "seed=range(1,3)",  # replaces the experiment's own 1,...,10
        "activation=glob(t*)",
    )
    jobs = config.sweep_jobs(cfg)
    assert jobs[0] == [
        "seed=1",
        "experiment=ch1_learning_rate",
        "model.hidden=[30]",
        "train.eta=0.5",
        "activation=tanh",
    ]
    assert len(jobs) == 2 * 2 * 2 * 1
    assert {job[3] for job in jobs} == {"train.eta=0.5", "train.eta=1.0"}


def test_intervals_are_left_to_a_search_and_refused_by_the_basic_sweeper(composer):
    overrides = ("train.eta=tag(log,interval(0.01,10))", "seed=1,2")
    assert config.sweep_jobs(with_sweep(composer(), *overrides, sweeper="a.Search")) == [
        ["seed=1"],
        ["seed=2"],
    ]
    with pytest.raises(config.ConfigError, match=r"^train.eta=tag\(log,interval\(0.01,10\)\): the basic"):
        config.sweep_jobs(with_sweep(composer(), *overrides))


def test_labels_show_one_value_per_key_and_numbers_to_4_significant_digits():
    """A run's label (and name): what a search picked rounded, what a user typed as typed."""
    overrides = ["train.eta=0.44303752452182665", "regularization.lmbda=7.257005721594282", "train.eta=1.0"]
    assert Overrides.parse(overrides).shown == ["train.eta=1.0", "regularization.lmbda=7.257"]
    typed = ["model.hidden=[100, 30]", "train.eta=3e-07", "seed=3", "tracking.experiment='my runs'"]
    assert Overrides.parse(typed).shown == typed
    assert Overrides.parse(["train.eta=123456.7"]).shown == ["train.eta=1.235e+05"]
