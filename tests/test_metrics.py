"""ConfusionMatrix against a hand-computed example, ignore pixels, absent classes, and the sum across ranks."""

import math

import pytest
import torch

from segformer_edu.metrics import ConfusionMatrix

# rows: true class, columns: predicted class (10 labelled pixels)
#          p0 p1 p2
#   t0  [   3, 1, 0 ]    IoU0 = 3 / (4 + 4 - 3) = 0.6      acc0 = 3/4
#   t1  [   0, 2, 1 ]    IoU1 = 2 / (3 + 3 - 2) = 0.5      acc1 = 2/3
#   t2  [   1, 0, 2 ]    IoU2 = 2 / (3 + 3 - 2) = 0.5      acc2 = 2/3
HAND_MATRIX = [[3, 1, 0], [0, 2, 1], [1, 0, 2]]
TARGET = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 255, 255]
PRED = [0, 0, 0, 1, 1, 1, 2, 0, 2, 2, 1, 2]  # the last two are ignored pixels: predictions there must not count


def test_hand_computed_example():
    metric = ConfusionMatrix(3)
    metric.update(torch.tensor(PRED), torch.tensor(TARGET))
    assert metric.matrix.tolist() == HAND_MATRIX
    result = metric.compute()
    assert result["iou"] == pytest.approx([0.6, 0.5, 0.5])
    assert result["miou"] == pytest.approx(1.6 / 3)
    assert result["acc"] == pytest.approx(7 / 10)
    assert result["class_acc"] == pytest.approx([3 / 4, 2 / 3, 2 / 3])
    assert result["mean_acc"] == pytest.approx((3 / 4 + 2 / 3 + 2 / 3) / 3)


def test_updates_accumulate_over_any_shape_and_reset_clears():
    metric = ConfusionMatrix(3)
    pred, target = torch.tensor(PRED).reshape(2, 2, 3), torch.tensor(TARGET).reshape(2, 2, 3)  # (B, H, W)
    metric.update(pred[:1], target[:1])
    metric.update(pred[1:], target[1:])
    assert metric.matrix.tolist() == HAND_MATRIX
    metric.reset()
    assert metric.matrix.sum() == 0


def test_absent_class_is_nan_and_left_out_of_the_mean_but_a_false_positive_class_counts():
    metric = ConfusionMatrix(5)  # class 3 never appears; class 4 is only ever predicted
    metric.update(torch.tensor(PRED + [4]), torch.tensor(TARGET + [0]))
    iou = metric.compute()["iou"]
    assert math.isnan(iou[3]) and iou[4] == 0.0
    assert metric.compute()["miou"] == pytest.approx((3 / 6 + 0.5 + 0.5 + 0.0) / 4)  # IoU0 = 3 / (5 + 4 - 3)


def test_bad_inputs_raise():
    metric = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="shape"):
        metric.update(torch.zeros(4, dtype=torch.long), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="0..2"):
        metric.update(torch.tensor([0, 1]), torch.tensor([0, 3]))  # 3 is neither a class nor the ignore index


def _reduce_on_rank(rank: int, world: int, init_file: str, results) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    metric = ConfusionMatrix(3)
    half = slice(0, 6) if rank == 0 else slice(6, None)  # each rank sees half of the pixels
    metric.update(torch.tensor(PRED[half]), torch.tensor(TARGET[half]))
    results[rank] = metric.reduce_().matrix.tolist()
    torch.distributed.destroy_process_group()


def test_reduce_sums_the_matrices_of_all_ranks(tmp_path):
    context = torch.multiprocessing.get_context("fork")
    with context.Manager() as manager:
        results = manager.dict()
        processes = [context.Process(target=_reduce_on_rank, args=(rank, 2, str(tmp_path / "init"), results))
                     for rank in range(2)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(60)
        assert [p.exitcode for p in processes] == [0, 0]
        assert results[0] == results[1] == HAND_MATRIX
