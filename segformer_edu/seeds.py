"""Runs repeated at several seeds (chapters 8 and 11): their mean and spread, and whether a change
beats its base by more than that spread.

Two runs of one recipe that differ only in their random draws (initial weights, crops, data order)
land apart; the seeds of the base measure how far. A change counts as a gain when its mean gain is
more than twice the standard error of that gain, about a 95 % test when the noise is normal.
"""

import statistics


def over_seeds(rows: list[dict]) -> dict[str, list[float]]:
    """Each run's mIoU, one value per seed, from rows of (name, seed, miou, ...) in seed order; a
    run that diverged (``None``) counts as 0."""
    values = {}
    for row in rows:
        values.setdefault(row["name"], []).append(row["miou"] or 0.0)
    return values


def mean_sd(values: list[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (n - 1) of one run's values over its seeds."""
    if len(values) < 2:
        raise ValueError("a spread takes at least two seeds")
    return statistics.mean(values), statistics.stdev(values)


def mean_sd_text(values: list[float], digits: int = 1) -> str:
    """'mean ± sd' on one line (no-break spaces, for a narrow table column), or the one value."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    mean, sd = mean_sd(values)
    space = "\N{NO-BREAK SPACE}"
    return f"{mean:.{digits}f}{space}±{space}{sd:.{digits}f}"


def gain(values: list[float], base: list[float]) -> tuple[float, float]:
    """The change's mean gain over the base, and the standard error of that gain,
    sqrt(sd_change^2 / n_change + sd_base^2 / n_base)."""
    (mean, sd), (base_mean, base_sd) = mean_sd(values), mean_sd(base)
    error = (sd**2 / len(values) + base_sd**2 / len(base)) ** 0.5
    return mean - base_mean, error


def beats(values: list[float], base: list[float]) -> bool:
    """The mean gain is more than twice its standard error."""
    difference, error = gain(values, base)
    return difference > 2 * error
