"""The benchmark (`gptlab bench`): training and generation speed of every experiment,
against a plain GPT-2 and the device's measured peak. See gptlab.bench.cli."""
