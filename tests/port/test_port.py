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
    assert t.exact["torch"] == ("rmsprop.RMSprop.from_preset(model.parameters(), 'tf1', "
                                "lr=0.016, eps=0.001, momentum=0.9)")  # fmt: skip
    assert (
        t.exact["jax"]
        == "rmsprop.optax.from_preset('tf1', learning_rate=0.016, eps=0.001, momentum=0.9)"
    )
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
    opt = eval(t.exact["torch"], {"rmsprop": rmsprop, "model": model})
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

    tx = eval(t.exact["jax"], {"rmsprop": rmsprop, "optax": optax, "jax": jax})
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
    assert timm.source.decay_matrices_only and "p.ndim > 1" in timm.exact["torch"]
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
        ("timm", {"opt": "rmsproptf", "betas": 1}, "unknown key 'betas'"),
        ("tf1", {"learning_rate": 0.1, "decay": 1.5}, "alpha"),
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
