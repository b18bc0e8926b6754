"""A learning-rate sweep's second half: each experiment's fitted rate (gptlab.reporting.lr_sweep), said,
and the runs of its seeds there."""

from __future__ import annotations

from gptlab.study.plan import Study, plan_tuned


def tuned_runs(study: Study, runs: list, quiet_missing: bool = False) -> list:
    """After the sweep: each experiment's fitted learning rate, said, and the runs of its seeds
    there (not the sweep's own: see plan_tuned) that are not planned already. An experiment whose
    sweep is missing a point waits for the same command to retry it."""
    from gptlab.optim import optimizer_class
    from gptlab.reporting.lr_sweep import sweep_fits
    from gptlab.training.record import read_record
    records = [r for r in (read_record(p.log_dir) for p in runs) if r]  # the other seeds: the seed-to-seed spread
    fits = sweep_fits(records)
    chosen = {}
    for name in study.experiments:
        fit = fits.get(load_name(runs, name))
        if fit is None or not fit.complete:
            if not quiet_missing:
                missing = ", ".join(f"x{m:g}" for m in (fit.missing if fit else study.lr_sweep))
                print(f"  {name}: the sweep is missing {missing}; its seeds at a tuned rate wait for the same command "
                      f"to retry it")
            continue
        chosen[name] = fit.chosen
        found = f"fitted optimum x{fit.optimum:.3g}" if fit.optimum else fit.flag
        own = next(r.run for r in runs if r.experiment == name and r.lr_multiplier == 1)
        rates = ", ".join(f"{f} {getattr(own.train_config, f) * fit.chosen:.3g}"
                          for f in optimizer_class(own.experiment.optimizer_class).lr_fields)
        print(f"  {name}: {found}; its seeds train at x{fit.chosen:g} ({rates})")
    planned = {r.log_dir for r in runs}  # where the tuned rate is 1, the shared seeds are already planned
    return [r for r in plan_tuned(study, chosen) if r.log_dir not in planned]


def load_name(runs: list, name: str) -> str:
    """The experiment's name in its runs' records (a path given to the study is recorded by its stem)."""
    return next(r.run.experiment.name for r in runs if r.experiment == name)


