"""The command lines' one-line errors (segformer_edu.cli)."""

import argparse

import pytest

from segformer_edu.cli import ArgumentParser, one_line, report


def test_a_multi_line_message_keeps_its_first_line():
    assert one_line(ValueError("label x.png holds 12\n(more detail)")) == "label x.png holds 12"


def test_a_data_loading_worker_error_keeps_the_original_message():
    # the shape of the error a DataLoader re-raises in the main process
    wrapped = RuntimeError("Caught ValueError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                           "last):\n  File \"worker.py\", line 1, in f\nValueError: corrupt image train_001.jpg")
    assert one_line(wrapped) == "corrupt image train_001.jpg"


def test_an_empty_message_names_the_error_and_report_prints_one_line(capsys):
    assert one_line(KeyboardInterrupt()) == "KeyboardInterrupt"
    assert report(FileNotFoundError("runs/x/best.pt not found: train first")) == 1
    assert capsys.readouterr().err == "error: runs/x/best.pt not found: train first\n"


def test_notes_join_the_line():
    error = MemoryError("out of memory")
    error.add_note("runs/x/latest.pt (iteration 3) is kept: continue with --resume")
    assert one_line(error) == "out of memory; runs/x/latest.pt (iteration 3) is kept: continue with --resume"


def test_the_parser_shows_defaults_and_says_a_typo_in_one_line(capsys):
    parser = ArgumentParser(prog="prog")
    parser.add_argument("--max-iters", type=int, default=100, help="steps")
    parser.add_argument("--crop-size", type=int, nargs=2, default=(512, 512), help="crop")
    parser.add_argument("--seed", type=int, default=0, help="seed")
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=False, help="go on")
    shown = parser.format_help()
    assert "steps (default: 100)" in shown and "crop (default: 512 512)" in shown
    assert "seed (default: 0)" in shown
    with pytest.raises(SystemExit) as usage:
        parser.parse_args(["--max-itres", "5"])
    assert usage.value.code == 2
    assert capsys.readouterr().err == ("error: unrecognized arguments: --max-itres 5 (did you mean "
                                       "--max-iters?); see prog --help\n")
