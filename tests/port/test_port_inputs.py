"""``rmsprop port`` on the inputs people paste (issue 30): timm's train.py flags and config
names, SB3 A2C/PPO descriptions, Keras get_config() values in float32 and as long JSON
text, wrong-typed or malformed values (one bounded line naming the key), Keras options
the exact lines must carry or name, and comparisons that say what they measure."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from rmsprop import PRESETS
from rmsprop.cli.main import main
from rmsprop.port import translate
from rmsprop.port.measure import Difference
from rmsprop.port.targets import number

#: timm's EfficientNet-B0 recipe as its train.py takes it (README: --opt rmsproptf
#: --opt-eps .001 --lr .048 --momentum 0.9 --weight-decay 1e-5)
TIMM_FLAGS = ["--opt", "rmsproptf", "--opt-eps", ".001", "--lr", ".048", "--momentum", "0.9",
              "--weight-decay", "1e-5"]  # fmt: skip
#: SB3's A2C on Atari in the RL Zoo (a2c.yml): RMSpropTFLike with eps 1e-5, as the Zoo writes it
ZOO_POLICY = "dict(optimizer_class=RMSpropTFLike, optimizer_kwargs=dict(eps=1e-5))"


def run_cli(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------------------ timm
def test_timm_train_py_flags_as_typed(capsys):
    code, out, err = run_cli(["port", "timm", *TIMM_FLAGS, "--steps", "20"], capsys)
    assert code == 0, err
    assert "from_preset(model.parameters()" not in out  # timm's decay rule: two groups
    assert "'timm_tf', lr=0.048, eps=0.001, momentum=0.9, weight_decay=1e-05)" in out
    # the flags read as the factory's keyword arguments read
    flags = translate("timm", TIMM_FLAGS)
    kwargs = translate("timm", {"opt": "rmsproptf", "eps": 1e-3, "lr": 0.048, "weight_decay": 1e-5})
    assert flags.source.hyperparameters == kwargs.source.hyperparameters
    assert flags.exact == kwargs.exact


def test_timm_config_names_and_train_py_defaults():
    config = translate("timm", {"opt": "rmsproptf", "opt_eps": 1e-3, "lr": 0.048,
                                "opt_betas": [0.9, 0.999], "opt_kwargs": {"alpha": 0.95}})  # fmt: skip
    hp = config.source.hyperparameters
    assert (hp["eps"], hp["lr"], hp["alpha"], hp["weight_decay"]) == (1e-3, 0.048, 0.95, 0.0)
    assert any("drops betas" in n for n in config.source.notes)
    # train.py's own default weight decay is 2e-5 (the factory's is 0)
    flags = translate("timm", ["--opt", "rmsproptf", "--lr", "0.048"])
    assert flags.source.hyperparameters["weight_decay"] == 2e-5
    assert any("train.py's default 2e-5" in n for n in flags.source.notes)
    # clipping is train.py's loop: named in every line, not dropped
    clipped = translate("timm", [*TIMM_FLAGS, "--clip-grad", "10"])
    for target in ("torch", "jax", "keras"):
        assert [label for label, _ in clipped.caveats[target]] == ["clip_grad=10"]


def test_timm_port_words_keep_port_options(capsys):
    """--steps and --config stay port's own, wherever they stand among timm's flags."""
    code, out, err = run_cli(["port", "timm", "--steps", "5", "--opt", "rmsprop", "--lr", "0.01"],
                             capsys)  # fmt: skip
    assert code == 0, err and "after 5 steps" in out


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["--opt", "rmsproptf", "--model", "resnet50"], "'--model': not one of train.py's"),
        (["--opt", "rmsproptf", "--lr-base", "0.1"], "give --lr"),
        (["--lr", "0.1"], "--opt is needed"),
        (["--opt", "rmsproptf", "--opt-eps", "x" * 5000], "invalid float value"),
        (["--opt", "rmsproptf", "--clip-grad", "1", "--clip-mode", "foo"], "clip_mode='foo'"),
        (["--opt", "rmsproptf", "lr=0.1"], "'lr=0.1': a word outside a flag"),
        (["--opt", "adamw"], "'rmsproptf' and 'rmsprop'"),
        (["--steps"], "argument --steps: expected one argument"),
    ],
)
def test_timm_flag_errors(words, message, capsys):
    code, _, err = run_cli(["port", "timm", *words], capsys)
    assert code == 2 and message in err and err.count("\n") == 1 and len(err) < 500


# ------------------------------------------------------------------------------ SB3
def test_sb3_a2c_default_is_torch_rmsprop():
    """SB3's A2C: use_rms_prop=True -> torch.optim.RMSprop(alpha=0.99, eps=rms_prop_eps
    (1e-5), weight_decay=0), lr 7e-4; its loop clips to max_grad_norm 0.5."""
    t = translate("sb3", {})
    hp = t.source.hyperparameters
    assert t.preset == "torch" and (hp["lr"], hp["alpha"], hp["eps"]) == (7e-4, 0.99, 1e-5)
    assert t.native["torch"].differences == []
    assert t.exact["torch"] == ("opt = rmsprop.RMSprop.from_preset(model.parameters(), 'torch', "
                                "lr=0.0007, eps=1e-05)")  # fmt: skip
    assert [label for label, _ in t.caveats["jax"]] == ["max_grad_norm=0.5"]
    assert translate("sb3", {"rms_prop_eps": 1e-3}).source.hyperparameters["eps"] == 1e-3


def test_sb3_rmsprop_tf_like_from_the_zoo_string(capsys):
    t = translate("sb3", {"policy_kwargs": ZOO_POLICY, "learning_rate": "lin_7e-4",
                          "n_steps": 5, "ent_coef": 0.01})  # fmt: skip
    hp = t.source.hyperparameters
    assert t.preset == "sb3_tf_like" and t.source.schedule is not None
    assert (hp["lr"], hp["alpha"], hp["eps"], hp["initial_accumulator_value"]) == (
        7e-4, 0.99, 1e-5, 1.0)  # fmt: skip
    assert hp["eps_in_sqrt"] and not hp["lr_in_momentum"]
    assert "learning_rate=schedule" in t.exact["jax"]
    # the same description as Python objects, and PPO with the class
    same = translate("sb3", {"policy_kwargs": {"optimizer_class": "RMSpropTFLike",
                                               "optimizer_kwargs": {"eps": 1e-5}}})  # fmt: skip
    assert same.source.hyperparameters == {**hp, "lr": 7e-4}
    ppo = translate("sb3", {"algo": "PPO", "optimizer_class": "th.optim.RMSprop",
                            "optimizer_kwargs": {"eps": 1e-3, "momentum": 0.9}})  # fmt: skip
    assert ppo.preset == "torch" and ppo.source.hyperparameters["lr"] == 3e-4
    code, out, err = run_cli(["port", "sb3", f"policy_kwargs={ZOO_POLICY}",
                              "optimizer_kwargs={'eps': 0.001}"], capsys)  # fmt: skip
    assert code == 2 and "optimizer_kwargs is given twice" in err
    eps = "optimizer_kwargs=dict(eps=0.0010000000474974513)"
    code, out, err = run_cli(["port", "sb3", "optimizer_class=RMSpropTFLike", eps, "--steps", "20"],
                             capsys)  # fmt: skip
    assert code == 0, err
    assert "'sb3_tf_like', lr=0.0007, eps=0.001)" in out and "0.00100000004" not in out


@pytest.mark.parametrize(
    ("description", "message"),
    [
        ({"algo": "PPO"}, "Adam"),
        ({"use_rms_prop": False}, "Adam"),
        ({"algo": "DQN"}, "'A2C' and 'PPO'"),
        ({"optimizer_class": "Adam"}, "optimizer_class='Adam'"),
        ({"optimizer_class": "RMSpropTFLike", "optimizer_kwargs": {"foreach": True}},
         "unknown key 'foreach'"),
        ({"optimizer_kwargs": {"lr": 1.0}, "optimizer_class": "RMSprop"}, "passes the lr itself"),
        ({"policy_kwargs": "dict(optimizer_class=__import__('os'))"}, "policy_kwargs must be"),
        ({"rms_prop_eps": "big"}, "rms_prop_eps must be a real number"),
        ({"max_grad_norm": -1}, "max_grad_norm=-1"),
        ({"learning_rate": "lin_x"}, "learning_rate must be a number or 'lin_<number>'"),
    ],
)  # fmt: skip
def test_sb3_bad_input_names_the_key(description, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        translate("sb3", description)


# ------------------------------------------------------------------------------ float32
def test_float32_values_print_as_the_shortest_float32_decimal():
    assert number(0.0010000000474974513) == "0.001"
    assert number(float(np.float32(0.9))) == "0.9"
    assert number(float(np.float32(1e-7))) == "1e-07"
    assert number(0.1) == "0.1" and number(0.016) == "0.016"  # float64 values as typed
    assert number(0.5) == "0.5" and number(0.0) == "0.0"


def test_keras_get_config_prints_0_001_everywhere(capsys):
    keras = pytest.importorskip("keras")
    config = keras.optimizers.RMSprop(learning_rate=1e-3, rho=0.9, momentum=0.9).get_config()
    assert config["learning_rate"] == 0.0010000000474974513  # what Keras writes
    code, out, err = run_cli(["port", "keras", "--config", json.dumps(config), "--steps", "20"],
                             capsys)  # fmt: skip
    assert code == 0, err
    assert "0.00100000004" not in out and "0.899999" not in out
    assert "learning_rate=0.001, preset='keras'" in out and "lr=0.001" in out


# ------------------------------------------------------------------------------ --config
def test_config_json_text_of_any_length(capsys, tmp_path):
    """A real Keras get_config() is longer than a file name may be (255 bytes)."""
    config = {"name": "rmsprop", "learning_rate": 0.0010000000474974513, "weight_decay": None,
              "clipnorm": None, "global_clipnorm": None, "clipvalue": None, "use_ema": False,
              "ema_momentum": 0.99, "ema_overwrite_frequency": None, "loss_scale_factor": None,
              "gradient_accumulation_steps": None, "rho": 0.8999999761581421, "momentum": 0.0,
              "epsilon": 1e-07, "centered": False}  # fmt: skip
    text = "  " + json.dumps({"class_name": "RMSprop", "config": config}) + " " * 5000
    assert len(text) > 255
    code, out, err = run_cli(["port", "keras", "--config", text, "--steps", "20"], capsys)
    assert code == 0, err and "learning_rate=0.001" in out
    long_path = "d/" * 300 + "config.json"
    code, _, err = run_cli(["port", "keras", "--config", long_path], capsys)
    assert code == 2 and "no such file" in err and err.count("\n") == 1 and len(err) < 300
    code, _, err = run_cli(["port", "keras", "--config", "{" + "x" * 100_000], capsys)
    assert code == 2 and "neither a JSON file nor JSON text" in err and len(err) < 300


# ------------------------------------------------------------------------------ bad input
HUGE = "x" * 100_000


@pytest.mark.parametrize(
    ("source", "description", "message"),
    [
        ("keras", {"gradient_accumulation_steps": -3}, "gradient_accumulation_steps must be an integer >= 2"),
        ("keras", {"gradient_accumulation_steps": 2.5}, "gradient_accumulation_steps must be an integer"),
        ("keras", {"use_ema": True, "ema_momentum": 5.0}, "ema_momentum=5.0 is invalid"),
        ("keras", {"ema_overwrite_frequency": 0}, "ema_overwrite_frequency must be an integer >= 1"),
        ("keras", {"loss_scale_factor": "big"}, "loss_scale_factor must be a real number"),
        ("keras", {"name": 3}, "name must be a string"),
        ("torch", {"foreach": "yes"}, "foreach must be True, False or None"),
        ("timm", {"opt": "rmsproptf", "foreach": 1}, "foreach must be True, False or None"),
        ("keras", {"learning_rate": {"class_name": "ExponentialDecay", "config": 3}},
         "learning_rate is a mapping but not a serialized Keras schedule"),
        ("keras", {"learning_rate": {"a": 1}}, "learning_rate is a mapping but not"),
        ("keras", {"learning_rate": {"class_name": "ExponentialDecay",
                                     "config": {"initial_learning_rate": "x"}}},
         "initial_learning_rate must be a real number"),
        ("keras", {"learning_rate": {"class_name": "PiecewiseConstantDecay", "config": {"values": 5}}},
         "first value cannot be read"),
        ("keras", {"learning_rate": [0.1]}, "learning_rate must be a real number"),
        ("keras", {"class_name": "RMSprop", "config": [1, 2]}, "the Keras config's 'config' must be a mapping"),
        ("keras", "[1, 2]", "must be a mapping of names to values"),
        ("keras", "{not json", "must be JSON"),
        ("keras", {1: 2}, "every key is a name"),
        ("torch", {"lr": HUGE}, "lr must be a real number"),
        ("torch", {HUGE: 1}, "unknown key 'xxxx"),
        ("tf1", {"learning_rate": {"class_name": "X", "config": {}}}, "learning_rate must be a real number"),
    ],
)  # fmt: skip
def test_wrong_typed_and_malformed_values_are_one_bounded_line(source, description, message):
    with pytest.raises(ValueError, match=re.escape(message)) as raised:
        translate(source, description)
    text = str(raised.value)
    assert message in text and "\n" not in text and len(text) < 400


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["port", "keras", "gradient_accumulation_steps=-3"], "gradient_accumulation_steps must be"),
        (["port", "keras", "use_ema=True", "ema_momentum=5.0"], "ema_momentum=5.0 is invalid"),
        (["port", "torch", "foreach='yes'"], "foreach must be True, False or None"),
        (["port", "keras", "learning_rate={'class_name': 'X', 'config': 3}"], "not a serialized Keras schedule"),
        (["port", "torch", f"lr={HUGE}"], "lr must be a real number"),
        (["port", "torch", HUGE], "expected KEY=VALUE"),
    ],
)  # fmt: skip
def test_cli_wrong_types_are_one_bounded_line(argv, message, capsys):
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and message in err and err.count("\n") == 1 and len(err) < 500
    assert "internal error" not in err and "Traceback" not in err


# ------------------------------------------------------------------------------ exactness
def test_keras_line_keeps_keras_options_and_the_others_name_them(capsys):
    t = translate("keras", {"learning_rate": 0.01, "use_ema": True, "ema_overwrite_frequency": 3,
                            "gradient_accumulation_steps": 2})  # fmt: skip
    assert t.exact["keras"] == ("opt = rmsprop.keras.RMSprop(learning_rate=0.01, preset='keras', "
                                "use_ema=True, ema_momentum=0.99, ema_overwrite_frequency=3, "
                                "gradient_accumulation_steps=2)")  # fmt: skip
    assert t.caveats["keras"] == ()
    for target in ("torch", "jax"):
        labels = [label for label, _ in t.caveats[target]]
        assert labels == ["use_ema=True (ema_momentum=0.99, ema_overwrite_frequency=3)",
                          "gradient_accumulation_steps=2"]  # fmt: skip
    code, out, err = run_cli(["port", "keras", "use_ema=True", "gradient_accumulation_steps=2",
                              "--steps", "5"], capsys)  # fmt: skip
    assert code == 0, err
    assert "PyTorch (exact except use_ema=True" in out and "optax.MultiSteps" in out
    keras_title = next(line for line in out.splitlines() if line.startswith("  Keras 3"))
    assert "exact except" not in keras_title
    plain = translate("keras", {"learning_rate": 0.01})
    assert all(c == () for c in plain.caveats.values())


def test_keras_line_with_ema_and_accumulation_runs_as_keras():
    """The printed Keras line, run, gives real Keras's RMSprop with the same EMA and
    gradient accumulation, bit for bit (float32, the same backend)."""
    keras = pytest.importorskip("keras")
    import rmsprop
    import rmsprop.keras

    config = {"learning_rate": 0.01, "momentum": 0.5, "use_ema": True, "ema_momentum": 0.9,
              "ema_overwrite_frequency": 3, "gradient_accumulation_steps": 2}  # fmt: skip
    scope = {"rmsprop": rmsprop}
    exec(translate("keras", config).exact["keras"], scope)
    rng = np.random.default_rng(0)
    start = rng.normal(size=(3, 4)).astype("float32")
    grads = [rng.normal(size=(3, 4)).astype("float32") for _ in range(12)]
    results = []
    for opt in (scope["opt"], keras.optimizers.RMSprop(**config)):
        variable = keras.Variable(start)
        for g in grads:
            opt.apply_gradients([(keras.ops.convert_to_tensor(g), variable)])
        results.append(keras.ops.convert_to_numpy(variable.value))
    np.testing.assert_array_equal(results[0], results[1])
    assert not np.array_equal(results[0], start)


# ------------------------------------------------------------------------------ wording
def test_each_comparison_says_what_it_measures(capsys):
    far = Difference("constant lr", 200, 1.4121, loss_exact=0.41, loss_native=0.35)
    line = far.describe()
    assert "141.21% apart" in line and "farther from the exact one than the exact run moved" in line
    assert "a lower loss says only that its steps suit this toy problem" in line
    tiny = Difference("constant lr", 200, 0.0, loss_exact=0.41, loss_native=0.41).describe()
    assert "0% apart" in tiny and "too small to show on this small problem, not absent" in tiny
    code, out, _ = run_cli(["port", "keras", "weight_decay=1e-4", "--steps", "20"], capsys)
    assert code == 0 and "‖θ_native − θ_exact‖ / ‖θ_exact − θ₀‖" in out
    assert "cannot express weight_decay=0.0001" in out and "too small to show" in out


def test_the_measure_is_the_documented_ratio():
    """distance = ‖θ_exact − θ_native‖ / ‖θ_exact − θ₀‖ (θ₀ = 0) on port/measure.py's problem."""
    from rmsprop.port.measure import compare, run

    exact = PRESETS["tf1"].hyperparameters(lr=0.01, maximize=False, clipvalue=None,
                                           clipnorm=None, global_clipnorm=None)  # fmt: skip
    native = {**exact, "eps_in_sqrt": False}
    constant = compare(exact, native, steps=30)[0]
    a, _ = run(exact, lambda step: 0.01, 30)
    b, _ = run(native, lambda step: 0.01, 30)
    assert constant.distance == np.linalg.norm(a - b) / np.linalg.norm(a)


def _sb3_rmsprop_tf_like_step(p, grad, state, lr, alpha, eps, momentum, centered):
    """SB3's RMSpropTFLike.step for one tensor, op for op
    (stable_baselines3/common/sb2_compat/rmsprop_tf_like.py)."""
    square_avg = state.setdefault("square_avg", p.new_ones(p.shape))
    square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
    if centered:
        grad_avg = state.setdefault("grad_avg", p.new_zeros(p.shape))
        grad_avg.mul_(alpha).add_(grad, alpha=1 - alpha)
        avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).add_(eps).sqrt_()
    else:
        avg = square_avg.add(eps).sqrt_()
    if momentum > 0:
        buf = state.setdefault("momentum_buffer", p.new_zeros(p.shape))
        buf.mul_(momentum).addcdiv_(grad, avg)
        p.add_(buf, alpha=-lr)
    else:
        p.addcdiv_(grad, avg, value=-lr)


@pytest.mark.parametrize(("momentum", "centered"), [(0.0, False), (0.9, True)])
def test_sb3_printed_torch_line_runs_as_rmsprop_tf_like(momentum, centered):
    """The printed PyTorch line of an SB3 RMSpropTFLike recipe, run, equals SB3's own
    step in float64 (the same math; 1e-12)."""
    torch = pytest.importorskip("torch")
    import rmsprop

    kwargs = {"eps": 1e-5, "momentum": momentum, "centered": centered}
    t = translate("sb3", {"optimizer_class": "RMSpropTFLike", "optimizer_kwargs": kwargs})
    rng = np.random.default_rng(2)
    start = rng.normal(size=(3, 4))
    grads = [rng.normal(size=(3, 4)) for _ in range(15)]
    model = torch.nn.Module()
    model.w = torch.nn.Parameter(torch.tensor(start))
    scope = {"rmsprop": rmsprop, "model": model}
    exec(t.exact["torch"], scope)
    theirs, state = torch.tensor(start), {}
    for g in grads:
        model.w.grad = torch.tensor(g)
        scope["opt"].step()
        _sb3_rmsprop_tf_like_step(theirs, torch.tensor(g), state, 7e-4, 0.99, 1e-5, momentum,
                                  centered)  # fmt: skip
        np.testing.assert_allclose(model.w.detach().numpy(), theirs.numpy(), rtol=1e-12, atol=1e-15)
