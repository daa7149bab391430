"""The command lines' one-line errors (segformer_edu.errors)."""

from segformer_edu.errors import one_line, report


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
