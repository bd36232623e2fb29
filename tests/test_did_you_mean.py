"""A typo or another framework's argument name gets an error that says what was meant:
presets, the optimizer's arguments and choices, the command line's choices."""

from __future__ import annotations

import pytest
import torch

import rmsprop
from rmsprop.cli.main import main


def _param():
    return [torch.zeros(3, requires_grad=True)]


def test_a_mistyped_preset_is_named():
    with pytest.raises(ValueError, match=r"unknown preset 'kears'.*did you mean 'keras'\?"):
        rmsprop.get_preset("kears")
    with pytest.raises(ValueError, match=r"did you mean 'tf1'\?"):
        rmsprop.RMSprop.from_preset(_param(), "tf_1", lr=0.1)


@pytest.mark.parametrize(("given", "ours"), [("rho", "alpha"), ("learning_rate", "lr"),
                                             ("epsilon", "eps"), ("decay", "alpha")])  # fmt: skip
def test_another_frameworks_argument_name_says_ours(given, ours):
    """Keras's ``rho``, TF1's ``decay`` ...: the error names the argument it is here, from
    the constructor and from ``from_preset`` alike."""
    with pytest.raises(
        TypeError, match=rf"'{given}' is another framework's name: here it is {ours}="
    ):
        rmsprop.RMSprop(_param(), **{given: 0.9})
    with pytest.raises(TypeError, match=rf"here it is {ours}="):
        rmsprop.RMSprop.from_preset(_param(), "keras", **{given: 0.9})


def test_a_mistyped_argument_or_choice_is_named():
    with pytest.raises(TypeError, match=r"'moment' is not an argument; did you mean 'momentum'\?"):
        rmsprop.RMSprop(_param(), moment=0.9)
    with pytest.raises(ValueError, match=r"impl='numbaa' is invalid.*did you mean 'numba'\?"):
        rmsprop.RMSprop(_param(), impl="numbaa")
    with pytest.raises(TypeError, match=r"'zzz' is not an argument$"):
        rmsprop.RMSprop(_param(), zzz=1)


def test_the_checked_constructor_keeps_its_signature_and_copies():
    import copy
    import inspect
    import pickle

    assert list(inspect.signature(rmsprop.RMSprop).parameters)[:3] == ["params", "lr", "alpha"]
    opt = rmsprop.RMSprop(_param(), lr=0.1, momentum=0.9)
    for twin in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert twin.param_groups[0]["momentum"] == 0.9


@pytest.mark.parametrize(("argv", "meant"), [(["demoo"], "demo"),
                                             (["bench", "--device", "cdua"], "cuda"),
                                             (["warmup", "--preset", "kears"], "keras")])  # fmt: skip
def test_the_command_line_says_which_choice_was_meant(argv, meant, capsys):
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors exit (2)
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert f"did you mean '{meant}'?" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(("given", "keras_name"), [("alpha", "rho"), ("eps", "epsilon"),
                                                   ("lr", "learning_rate")])  # fmt: skip
def test_torchs_argument_name_given_to_the_keras_optimizer_says_keras_name(given, keras_name):
    """The reverse: ``rmsprop.keras.RMSprop`` takes Keras's names; torch's get a pointer."""
    keras_front_end = pytest.importorskip("rmsprop.keras")
    with pytest.raises(TypeError, match=rf"{given}=, torch's name for Keras's {keras_name}="):
        keras_front_end.RMSprop(**{given: 0.5})
