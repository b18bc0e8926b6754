"""Ablation studies: experiments over seeds, trained fairly, compared with the baseline
(plan.py: what a study is and its fairness; runner.py: training its runs; cli.py: the
`gptlab study` command)."""
