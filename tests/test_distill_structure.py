import pytest
import torch

from edgekd.distill.prune import PruneConfig, make_pruner
from edgekd.distill.structure import load_resized
from edgekd.errors import ModelError
from edgekd.search.spaces import SPACES

CFG = {"stem": 8, "widths": [8, 16, 24], "depths": [1, 2, 1], "expands": [2, 3, 4], "kernels": [3, 5, 3],
       "se": [0, 1, 0]}


def test_pruned_student_reloads_from_a_plain_state_dict(tmp_path):
    torch.manual_seed(0)
    space = SPACES.get("mbv2")
    model = space.build(CFG, (1, 16, 16), 10)
    pruner = make_pruner(model, (1, 16, 16), PruneConfig(target_ms=1, steps=2))
    pruner.step()
    torch.save(model.state_dict(), tmp_path / "student.pt")
    state = torch.load(tmp_path / "student.pt", weights_only=True)
    again = load_resized(space.build(CFG, (1, 16, 16), 10), state)
    x = torch.randn(3, 1, 16, 16)
    assert torch.allclose(model.eval()(x), again(x))


def test_a_state_dict_from_another_architecture_is_refused():
    space = SPACES.get("mbv2")
    other = SPACES.get("resnet").build({"stem": 8, "widths": [8, 16, 24], "depths": [1, 1, 1]}, (1, 16, 16), 10)
    with pytest.raises(ModelError, match="does not fit its architecture"):
        load_resized(space.build(CFG, (1, 16, 16), 10), other.state_dict())


def test_a_pruned_model_with_batchnorm1d_prelu_and_layernorm_is_rebuilt():
    import copy

    import torch

    from edgekd.distill.prune import PruneConfig, _most_pruned
    from edgekd.distill.structure import load_resized

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.act = torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.PReLU(16)
            self.head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16 * 64, 32), torch.nn.BatchNorm1d(32),
                                            torch.nn.ReLU(), torch.nn.Linear(32, 24), torch.nn.LayerNorm(24),
                                            torch.nn.Linear(24, 10))

        def forward(self, x):
            return self.head(self.act(self.conv(x)))

    torch.manual_seed(0)
    pruned = _most_pruned(copy.deepcopy(Head()), (1, 8, 8), PruneConfig(target_ms=1, steps=1, max_ratio=0.5))
    assert pruned.act.weight.shape[0] < 16 and pruned.head[2].weight.shape[0] < 32
    x = torch.randn(4, 1, 8, 8)
    rebuilt = load_resized(Head(), pruned.state_dict())
    assert torch.allclose(rebuilt(x), pruned(x))


def test_a_layernorm_over_channels_and_pixels_is_rebuilt_with_its_bias_shape():
    """Its bias was rebuilt as a vector of its channels, so a student pruned across one could not load."""
    import torch

    from edgekd.distill.structure import load_resized

    def net(channels):
        return torch.nn.Sequential(torch.nn.Conv2d(1, channels, 3, padding=1), torch.nn.LayerNorm([channels, 4, 4]),
                                   torch.nn.Flatten(), torch.nn.Linear(channels * 16, 3))

    torch.manual_seed(0)
    small = net(2)
    rebuilt = load_resized(net(5), small.state_dict())
    x = torch.randn(2, 1, 4, 4)
    assert torch.equal(rebuilt(x), small.eval()(x))
