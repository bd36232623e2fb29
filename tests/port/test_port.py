"""rmsprop.port and ``rmsprop port``: each source format read into the right switches (known
answers from the frameworks' documented defaults), the printed equivalents run and give
the source's update exactly, native limits measured, and bad input named."""

from __future__ import annotations

import json

import numpy as np
import pytest

import rmsprop
from rmsprop import reference as ref
from rmsprop.cli.main import main
from rmsprop.port import translate

#: EfficientNet's TF1 recipe (the paper's: RMSProp decay 0.9, momentum 0.9, epsilon 1e-3,
#: lr 0.016 per 256 images): TF1 semantics with two overrides.
EFFICIENTNET = {"learning_rate": 0.016, "decay": 0.9, "momentum": 0.9, "epsilon": 1e-3}


def reference_trajectory(hp, params0, grads):
    tx = ref.rmsprop(**hp)
    params, state, out = [p.copy() for p in params0], None, []
    state = tx.init(params)
    for g in grads:
        updates, state = tx.update(g, state, params)
        params = ref.apply_updates(params, updates)
        out.append([p.copy() for p in params])
    return out


def problem(steps=20):
    rng = np.random.default_rng(0)
    params0 = [rng.normal(size=(3, 4)), rng.normal(size=4)]  # a matrix and a bias
    grads = [[rng.normal(size=p.shape) for p in params0] for _ in range(steps)]
    return params0, grads


def test_efficientnet_tf1_recipe_known_answer():
    t = translate("tf1", EFFICIENTNET)
    assert t.preset == "tf1" and t.overrides == {"eps": 1e-3, "momentum": 0.9}
    assert t.exact["torch"] == ("opt = rmsprop.RMSprop.from_preset(model.parameters(), 'tf1', "
                                "lr=0.016, eps=0.001, momentum=0.9)")  # fmt: skip
    assert t.exact["jax"] == ("tx = rmsprop.optax.from_preset('tf1', learning_rate=0.016, eps=0.001, "
                              "momentum=0.9)")  # fmt: skip
    assert t.exact["keras"] == ("opt = rmsprop.keras.RMSprop(learning_rate=0.016, preset='tf1', "
                                "epsilon=0.001, momentum=0.9)")  # fmt: skip
    # optax.rmsprop expresses TF1 exactly (initial_scale=1, eps inside, lr in the trace);
    # torch.optim cannot (eps inside, v0 = 1); Keras cannot start v at 1
    assert t.native["optax"].differences == []
    # (optax's own defaults, decay 0.9 and eps_in_sqrt=True, are left out)
    assert t.native["optax"].code == ("optax.rmsprop(learning_rate=0.016, eps=0.001, "
                                      "initial_scale=1.0, momentum=0.9)")  # fmt: skip
    assert {d[0] for d in t.native["torch"].differences} == {"eps_in_sqrt", "initial_accumulator_value",
                                                             "lr_in_momentum"}  # fmt: skip
    assert {d[0] for d in t.native["keras"].differences} == {"initial_accumulator_value"}
    for d in t.native["torch"].measured:
        assert d.distance > 0.01  # eps placement and v0 are not small


def test_printed_equivalents_run_and_are_exact():
    """Execute each printed line; its trajectory equals the NumPy reference of the recipe."""
    torch = pytest.importorskip("torch")
    t = translate("tf1", EFFICIENTNET)
    params0, grads = problem()
    expected = reference_trajectory(t.source.hyperparameters, params0, grads)
    # PyTorch
    model = torch.nn.Module()
    model.w = torch.nn.Parameter(torch.tensor(params0[0]))
    model.b = torch.nn.Parameter(torch.tensor(params0[1]))
    scope = {"rmsprop": rmsprop, "model": model}
    exec(t.exact["torch"], scope)
    opt = scope["opt"]
    for step, g in enumerate(grads):
        model.w.grad, model.b.grad = torch.tensor(g[0]), torch.tensor(g[1])
        opt.step()
        for mine, theirs in zip((model.w, model.b), expected[step]):
            np.testing.assert_allclose(mine.detach().numpy(), theirs, rtol=1e-12, atol=1e-14)
    # JAX
    jax = pytest.importorskip("jax")
    pytest.importorskip("optax")
    jax.config.update("jax_enable_x64", True)
    import optax

    import rmsprop.optax as rmsprop_optax  # noqa: F401 (the printed line reaches it as rmsprop.optax)

    scope = {"rmsprop": rmsprop, "optax": optax, "jax": jax}
    exec(t.exact["jax"], scope)
    tx = scope["tx"]
    params = [jax.numpy.asarray(p) for p in params0]
    state = tx.init(params)
    for step, g in enumerate(grads):
        updates, state = tx.update([jax.numpy.asarray(x) for x in g], state, params)
        params = optax.apply_updates(params, updates)
        for mine, theirs in zip(params, expected[step]):
            np.testing.assert_allclose(np.asarray(mine), theirs, rtol=1e-12, atol=1e-14)


def test_printed_keras_line_runs_and_is_exact():
    keras = pytest.importorskip("keras")
    import rmsprop.keras as rmsprop_keras  # noqa: F401

    t = translate("tf1", EFFICIENTNET)
    params0, grads = problem()
    expected = reference_trajectory(t.source.hyperparameters, params0, grads)
    floatx = keras.config.floatx()
    keras.config.set_floatx("float64")
    try:
        scope = {"rmsprop": rmsprop}
        exec(t.exact["keras"], scope)
        variables = [keras.Variable(p, dtype="float64") for p in params0]
        for step, g in enumerate(grads):
            scope["opt"].apply_gradients(
                [(keras.ops.convert_to_tensor(x), v) for x, v in zip(g, variables)]
            )
            for v, theirs in zip(variables, expected[step]):
                np.testing.assert_allclose(
                    keras.ops.convert_to_numpy(v.value), theirs, rtol=1e-12, atol=1e-14
                )
    finally:
        keras.config.set_floatx(floatx)


def test_each_source_format_reads_its_defaults():
    torch_src = translate("torch", {"lr": 7e-4, "alpha": 0.99, "eps": 1e-5})  # A2C's
    assert torch_src.preset == "torch" and torch_src.overrides == {"eps": 1e-5}
    assert torch_src.native["torch"].differences == []
    optax_src = translate("optax", {"learning_rate": 1e-3, "momentum": 0.9, "nesterov": True})
    hp = optax_src.source.hyperparameters
    assert optax_src.preset == "optax" and hp["nesterov"] and hp["lr_in_momentum"]
    assert optax_src.native["optax"].differences == []
    timm = translate("timm", {"opt": "rmsproptf", "lr": 0.016, "weight_decay": 1e-5})
    hp = timm.source.hyperparameters
    assert (hp["alpha"], hp["momentum"], hp["eps"], hp["initial_accumulator_value"]) == (
        0.9,
        0.9,
        1e-10,
        1.0,
    )
    assert hp["lr_in_momentum"] and hp["ema_form"] == "delta" and not hp["decoupled_weight_decay"]
    assert timm.preset == "timm_tf" and timm.source.timm_decay_filter
    assert "decays(n, p)" in timm.exact["torch"]
    plain = translate("timm", {"opt": "rmsprop", "lr": 0.01})  # torch.optim.RMSprop, alpha 0.9
    assert plain.preset == "torch" and plain.source.hyperparameters["alpha"] == 0.9
    assert plain.source.hyperparameters["momentum"] == 0.9


def test_keras_config_from_the_real_keras():
    keras = pytest.importorskip("keras")
    config = keras.optimizers.RMSprop(learning_rate=1e-3, rho=0.95, momentum=0.5, centered=True,
                                      weight_decay=0.01, clipnorm=1.0).get_config()  # fmt: skip
    for description in (config, json.dumps(config),
                        {"module": "keras.optimizers", "class_name": "RMSprop", "config": config}):  # fmt: skip
        t = translate("keras", description)
        hp = t.source.hyperparameters
        assert t.preset == "keras" and hp["alpha"] == 0.95 and hp["centered"]
        assert hp["weight_decay"] == 0.01 and hp["decoupled_weight_decay"] and hp["clipnorm"] == 1.0
        assert t.native["keras"].differences == []
    # torch.optim cannot decouple the decay nor clip: named, with the remedy
    names = {d[0]: d[3] for d in t.native["torch"].differences}
    assert "decoupled_weight_decay" in names and "clip_grad_norm_" in names["clipnorm"]


def test_lr_place_differs_only_when_the_lr_changes():
    """PyTorch momentum in optax.rmsprop: the lr moves into the buffer. Measured: equal
    (to rounding) with a constant lr, apart once the lr decays (semantics.md §9, item 2)."""
    t = translate("torch", {"lr": 1e-3, "momentum": 0.9, "eps": 1e-8})
    optax_native = t.native["optax"]
    assert [d[0] for d in optax_native.differences] == ["lr_in_momentum"]
    assert "eps_in_sqrt=False" in optax_native.code  # optax can place eps outside
    constant, decaying = optax_native.measured
    assert constant.distance < 1e-12 and decaying.distance > 1e-3


@pytest.mark.parametrize(
    ("source", "description", "message"),
    [
        (
            "torch",
            {"lr": 1e-3, "betas": (0.9, 0.99)},
            "unknown key 'betas' in a torch.optim.RMSprop",
        ),
        ("keras", {"learning_rate": 1e-3, "beta_1": 0.9}, "unknown key 'beta_1'"),
        ("keras", {"class_name": "Adam", "config": {}}, "class 'Adam', not RMSprop"),
        ("tf1", {"decay": 0.9}, "needs learning_rate"),
        ("optax", {"learning_rate": 1e-3, "rho": 0.9}, "unknown key 'rho' in a optax.rmsprop"),
        ("timm", {"opt": "adamw", "lr": 1e-3}, "'rmsproptf' and 'rmsprop'"),
        ("timm", {"opt": "rmsproptf", "gamma": 1}, "unknown key 'gamma'"),
        ("timm", {"opt": "rmsproptf", "betas": 1}, "betas \\(opt_betas\\) must be a list"),
        ("tf1", {"learning_rate": 0.1, "decay": 1.5}, "decay=1.5 is invalid"),
        ("torch", {"lr": "abc"}, "lr must be a real number, got 'abc'"),
        ("torch", {"lr": 0.01, "centered": "yes"}, "centered must be True or False"),
        ("torch", [("lr", 0.1)], "must be a mapping of names to values"),
        ("timm", {"lr": 0.01}, "needs opt"),
        ("timm", {"opt": "rmsproptf", "caution": True}, "caution=True is not supported"),
        (
            "keras",
            {"learning_rate": {"class_name": "Custom", "config": {}}},
            "first value cannot be read",
        ),
        ("caffe", {}, "unknown source 'caffe'"),
    ],
)
def test_bad_input_names_the_key(source, description, message):
    with pytest.raises(ValueError, match=message):
        translate(source, description)


def test_port_command(capsys, tmp_path):
    assert (
        main(["port", "tf1", "learning_rate=0.016", "decay=0.9", "momentum=0.9", "epsilon=1e-3"])
        == 0
    )
    out = capsys.readouterr().out
    for line in translate("tf1", EFFICIENTNET).exact.values():
        assert line.split("\n")[0] in out
    assert "optax.rmsprop: optax.rmsprop(" in out and "expresses this recipe exactly" in out
    assert "cannot express initial_accumulator_value=1" in out and "apart after 200 steps" in out
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"learning_rate": 0.001, "rho": 0.9}))
    assert main(["port", "keras", "--config", str(config), "--steps", "50"]) == 0
    assert "preset='keras'" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["port", "torch", "lr=1e-3", "foo=1"], "unknown key 'foo'"),
        (["port", "torch", "lr"], "expected KEY=VALUE, got 'lr'"),
        (
            ["port", "keras", "--config", "{not json"],
            "--config is neither a JSON file nor JSON text",
        ),
        (["port", "tf1", "decay=0.9"], "needs learning_rate"),
        (["port", "mxnet"], "invalid choice: 'mxnet'"),
        (["port", "torch", "lr=abc"], "lr must be a real number"),
        (["port", "torch", "lr=1e-3", "lr=2e-3"], "lr is given twice"),
        (["port", "keras", "--config", "missing.json"], "missing.json: no such file"),
    ],
)
def test_port_command_errors_are_one_line(argv, message, capsys):
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


class Small(
    __import__("torch").nn.Module if __import__("importlib").util.find_spec("torch") else object
):
    """A matrix, a bias, a 3-D position table timm exempts by name, and a 1-D scale."""

    def __init__(self, params0):
        import torch

        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(params0[0]))
        self.bias = torch.nn.Parameter(torch.tensor(params0[1]))
        self.pos_embed = torch.nn.Parameter(torch.tensor(params0[2]))

    def no_weight_decay(self):
        return {"pos_embed"}


RECIPES = {
    # bias correction makes step 1's centered variance exactly 0 (pure rounding noise, which
    # torch and NumPy round differently): eps must dominate it
    "centered_nesterov": ("optax", {"learning_rate": 0.01, "centered": True, "momentum": 0.9,
                                    "nesterov": True, "bias_correction": True, "eps": 1e-2}),
    "keras_decay_clip": ("keras", {"learning_rate": 0.01, "momentum": 0.5, "weight_decay": 0.01,
                                   "clipvalue": 0.5}),
    "torch_maximize": ("torch", {"lr": 0.01, "maximize": True, "weight_decay": 0.1, "centered": True}),
    "timm_filter": ("timm", {"opt": "rmsproptf", "lr": 0.01, "weight_decay": 0.05}),
}  # fmt: skip


@pytest.mark.parametrize("recipe", RECIPES)
def test_printed_torch_lines_of_several_recipes_are_exact(recipe):
    """The PyTorch line of each recipe runs and equals the NumPy reference of the recipe,
    with timm's decay rule applied by parameter (matrices decayed; biases, 1-D and
    no_weight_decay() names not)."""
    torch = pytest.importorskip("torch")
    source, description = RECIPES[recipe]
    t = translate(source, description)
    rng = np.random.default_rng(1)
    params0 = [rng.normal(size=(3, 4)), rng.normal(size=4), rng.normal(size=(1, 2, 3))]
    grads = [[rng.normal(size=p.shape) for p in params0] for _ in range(15)]
    hp = t.source.hyperparameters
    decayed = [True, False, False] if t.source.timm_decay_filter else [True, True, True]
    expected = [reference_trajectory({**hp, "weight_decay": hp["weight_decay"] if d else 0.0},
                                     [p0], [[g[i]] for g in grads])
                for i, (p0, d) in enumerate(zip(params0, decayed))]  # fmt: skip
    model = Small(params0)
    scope = {"rmsprop": rmsprop, "model": model}
    exec(t.exact["torch"], scope)
    tensors = (model.w, model.bias, model.pos_embed)
    for step, g in enumerate(grads):
        for tensor, x in zip(tensors, g):
            tensor.grad = torch.tensor(x)
        scope["opt"].step()
        for i, tensor in enumerate(tensors):
            np.testing.assert_allclose(
                tensor.detach().numpy(), expected[i][step][0], rtol=1e-12, atol=1e-14
            )


def test_optax_recipe_keeps_optax_bits_in_jax():
    """An optax recipe whose switches match another preset still prints the optax preset,
    so the JAX line is optax.rmsprop bit for bit in float32 (its rsqrt op order)."""
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    import rmsprop.optax

    description = {"learning_rate": 0.01, "initial_scale": 1.0, "eps": 1e-10}  # TF1's switches
    t = translate("optax", description)
    assert t.preset == "optax"
    scope = {"rmsprop": rmsprop}
    exec(t.exact["jax"], scope)
    theirs = optax.rmsprop(**description)
    params = jax.numpy.linspace(-1, 1, 1000, dtype=jax.numpy.float32)
    states = [scope["tx"].init(params), theirs.init(params)]
    values = [params, params]
    rng = np.random.default_rng(0)
    for _ in range(30):
        g = jax.numpy.asarray(rng.normal(size=1000), dtype=jax.numpy.float32)
        for k, tx in enumerate((scope["tx"], theirs)):
            u, states[k] = tx.update(g, states[k], values[k])
            values[k] = optax.apply_updates(values[k], u)
    assert np.array_equal(np.asarray(values[0]), np.asarray(values[1]))


@pytest.mark.parametrize(
    "recipe",
    [("torch", {"lr": 0.01, "centered": True, "eps": 0.0}), ("optax", {"learning_rate": 0.1, "decay": 0.0}),
     ("tf1", {"learning_rate": 0.01, "momentum": 0.9}), ("keras", {"learning_rate": 0.01, "rho": 0.5})],
)  # fmt: skip
def test_printed_native_calls_run_what_the_analysis_says(recipe):
    """Each printed torch.optim and optax call, run, equals the reference run of what the
    analysis says it runs (zero-valued arguments included)."""
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    from rmsprop.port.targets import NATIVE

    t = translate(*recipe)
    params0, grads = problem(10)
    for name in ("torch", "optax"):
        runs = NATIVE[name].expressible(t.source.hyperparameters)
        expected = reference_trajectory(runs, params0[:1], [g[:1] for g in grads])
        if name == "torch":
            model = torch.nn.Module()
            model.w = torch.nn.Parameter(torch.tensor(params0[0]))
            opt = eval(t.native["torch"].code, {"torch": torch, "model": model})
            for step, g in enumerate(grads):
                model.w.grad = torch.tensor(g[0])
                opt.step()
                np.testing.assert_allclose(model.w.detach().numpy(), expected[step][0], rtol=1e-12)
        else:
            tx = eval(t.native["optax"].code, {"optax": optax})
            p = jax.numpy.asarray(params0[0])
            state = tx.init(p)
            for step, g in enumerate(grads):
                u, state = tx.update(jax.numpy.asarray(g[0]), state, p)
                p = optax.apply_updates(p, u)
                np.testing.assert_allclose(np.asarray(p), expected[step][0], rtol=1e-12)


def test_unmeasurable_comparisons_say_why():
    t = translate("torch", {"lr": 0.01, "maximize": True})
    assert t.native["optax"].measured == [] and "ascends" in t.native["optax"].note
    schedule = {"class_name": "PiecewiseConstantDecay",
                "config": {"boundaries": [100], "values": [0.1, 0.01]}}  # fmt: skip
    t = translate("keras", {"learning_rate": schedule})
    assert t.source.hyperparameters["lr"] == 0.1 and "learning_rate=schedule" in t.exact["keras"]
    assert any("PiecewiseConstantDecay" in note for note in t.source.notes)
