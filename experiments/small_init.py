"""GPT-NeoX's initialisation instead of GPT-2's: small init, std sqrt(2 / (5 n_embd)) (Nguyen
& Salazar 2019), and residual projections at 2 / (n_layer sqrt(n_embd)) (Wang's, GPT-J).
The architecture is the baseline's: only the draw of the initial weights changes."""
from gptlab import GPTConfig

MODEL_CONFIG = GPTConfig(init="small")
