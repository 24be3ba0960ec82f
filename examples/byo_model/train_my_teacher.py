"""Stand-in for your own training script: trains my_teacher.build() on digits and saves a state dict."""

import torch
from my_teacher import build

from edgekd import DistillConfig, distill, load_data

data = load_data("digits")
torch.manual_seed(0)
model = build()
distill(model, data, DistillConfig(epochs=8, lr=3e-3, weight_decay=1e-4, augment=True))
torch.save(model.state_dict(), "my_teacher.pt")
print("saved my_teacher.pt")
