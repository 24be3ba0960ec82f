from dataclasses import replace

import numpy as np
import pytest

from edgekd.errors import BudgetError, ConfigError
from edgekd.search import SPACES, SearchConfig, build_student, search
from edgekd.search.proxies import PROXIES, make_probe
from edgekd.types import Budget, StudentSpec

CFG = SearchConfig(candidates=12, measure_top=2, rounds=1, probe_batch=16, anchors=3)


def test_space_samples_build_and_run(small_data):
    import torch

    space = SPACES.get("mbv2")
    rng = np.random.default_rng(0)
    for _ in range(3):
        model = build_student(StudentSpec("mbv2", space.sample(rng)), small_data.input_shape, 10)
        assert model(torch.zeros(2, *small_data.input_shape)).shape == (2, 10)


def test_diswot_prefers_a_copy_of_the_teacher(teacher, small_data):
    """A student identical to the (trained) teacher must score the maximum similarity, 0."""
    probe = make_probe(teacher.module, small_data.x_train[:16], small_data.y_train[:16])
    same = PROXIES.get("diswot")(teacher.module, probe)
    other = PROXIES.get("diswot")(build_student(StudentSpec("mbv2", SPACES.get("mbv2").smallest()),
                                                small_data.input_shape, 10), probe)
    assert same == pytest.approx(0.0, abs=1e-5) and other < same


def test_the_stages_take_what_the_other_stages_hand_over(teacher, small_data, fast_profile):
    """README's chain: load_teacher()/default_teacher() give a Teacher, a profile goes by name or file, and no
    budget is a budget of no limits; search and distill once failed on each with an AttributeError."""
    from edgekd.distill.trainer import distill
    from edgekd.types import DistillConfig

    result = search(teacher, small_data, fast_profile.source, None, CFG, progress=False)
    assert result.chosen is not None
    student = build_student(result.chosen.spec, small_data.input_shape, small_data.num_classes)
    trained = distill(student, small_data, DistillConfig(epochs=1, batch_size=64), teacher=teacher, progress=False)
    assert len(trained.history) == 1
    with pytest.raises(ConfigError, match=r"budget 0.5 is not a Budget; pass Budget\(latency_ms, max_size_kb\)"):
        search(teacher, small_data, fast_profile, 0.5, CFG, progress=False)


def test_search_takes_paths_as_path_objects(teacher, small_data, fast_profile, tmp_path):
    """README: paths may be strings or pathlib.Paths. A profile's .toml as a Path was taken for a loaded
    profile, an AttributeError deep in the search; a teacher's file as a Path went on as if it were a model."""
    from pathlib import Path

    small = SearchConfig(candidates=3, measure_top=1, rounds=1, probe_batch=16, anchors=3)
    assert search(teacher, small_data, Path(fast_profile.source), None, small, progress=False).chosen is not None
    (tmp_path / "t.pt2").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"the teacher '.*t.pt2' is a spec, and this function takes the model; "
                                          r"pass load_teacher\('.*t.pt2', weights\)"):
        search(tmp_path / "t.pt2", small_data, fast_profile, None, small, progress=False)


def test_search_chooses_best_scored_candidate_within_budget(teacher, small_data, fast_profile):
    lines: list[str] = []
    result = search(teacher.module, small_data, fast_profile, Budget(latency_ms=50, max_size_kb=60), CFG,
                    progress=False, log=lines.append)
    # without a progress bar the log hears the scoring: its first candidate and its last
    assert [line for line in lines if "scored" in line] == ["search: scored 1/12 candidates",
                                                            "search: scored 12/12 candidates"]
    assert result.chosen.latency_ms is not None and result.chosen.latency_ms <= 50
    assert result.chosen.file_bytes is not None and result.chosen.file_bytes <= 60 * 1024
    # an estimate a little over the limit is measured too, and its file decides
    within = [c for c in result.candidates if c.latency_ms is not None and c.latency_ms <= 50
              and c.shipped_bytes <= 60 * 1024]
    assert result.chosen.score == max(c.score for c in within)
    assert result.evaluated == 12


def test_unmeetable_latency_names_the_fastest(teacher, small_data, fast_profile):
    with pytest.raises(BudgetError, match=r"fastest candidate measured \d+\.\d+ ms"):
        search(teacher.module, small_data, fast_profile, Budget(latency_ms=1e-5), CFG, progress=False)


def test_unmeetable_size_names_the_smallest(teacher, small_data, fast_profile):
    with pytest.raises(BudgetError, match=r"smallest needs about \d+\.\d KB"):
        search(teacher.module, small_data, fast_profile, Budget(max_size_kb=1), CFG, progress=False)


def test_unknown_space_and_proxy(teacher, small_data, fast_profile):
    with pytest.raises(ConfigError, match="unknown search space 'nope'; choose one of: mbv2.*, pruned, resnet"):
        SearchConfig(space="mbv2,nope")
    with pytest.raises(ConfigError, match="unknown proxy 'nope'; choose one of: diswot, diswot_init, diswot_params, "
                                          "grad_norm, naswot, params, synflow, zico"):
        SearchConfig(proxy="nope")
    with pytest.raises(ConfigError, match="unknown precision 'fp16'"):
        SearchConfig(precision="fp16")


@pytest.mark.parametrize("name", ["mbv2", "resnet"])
def test_spaces_sample_mutate_and_build(name, small_data):
    import torch

    from edgekd.search.spaces import mutate, smallest

    space = SPACES.get(name)
    rng = np.random.default_rng(1)
    config = space.sample(rng)
    child = mutate(space, config, rng)
    changed = [k for k in config if config[k] != child[k]]
    assert len(changed) == 1  # one gene moved
    for cfg in (config, child, smallest(space)):
        model = build_student(StudentSpec(name, cfg), small_data.input_shape, 10)
        assert model(torch.zeros(2, *small_data.input_shape)).shape == (2, 10)
    assert len(space.blocks(config, (1, 32, 32), 10)) >= 3
    assert set(space.blocks(config, (1, 32, 32), 10)) <= set(space.all_blocks((1, 32, 32), 10))


@pytest.mark.parametrize("name", ["mbv2", "resnet"])
def test_large_images_are_pooled_before_the_stages_and_small_ones_are_not(name, tmp_path):
    """At 224x224 the stages used to run at 112, 56 and 28 px: a 0.05M-parameter student took 4-7 ms
    and scoring 100 of them took minutes. The stem now pools large images down to 56-64 px, as
    ResNet's stem does; digits' 32x32 (and anything up to 128 px) keeps the stem it had."""
    import onnx
    import torch

    from edgekd.export import ExportRequest, get_exporter
    from edgekd.models import STAGE_INPUT_MAX, stem_pools

    space = SPACES.get(name)
    config = space.smallest()
    for shape, pools, stage_side in [((3, 224, 224), 1, 56), ((3, 448, 320), 2, 40), ((1, 128, 128), 0, 64),
                                     ((1, 32, 32), 0, 16)]:
        model = build_student(StudentSpec(name, config), shape, 7).eval()
        assert model(torch.zeros(2, *shape)).shape == (2, 7)
        assert min(model.stem(torch.zeros(1, *shape)).shape[2:]) == stage_side <= STAGE_INPUT_MAX
        assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.stem) == pools
        keys = space.blocks(config, shape, 7)
        assert keys[0][:5] == ("stem", shape[0], config["stem"], 2, pools)
        assert set(keys) <= set(space.all_blocks(shape, 7))
        stem, stem_in = space.build_block(keys[0])  # the table's stem entry is the network's stem
        assert stem.eval()(torch.zeros(stem_in)).shape[2:] == tuple(keys[1][-2:])
    assert [n for n, _ in model.stem.named_children()] == ["0", "1", "2"]  # state-dict keys unchanged at 32x32
    assert stem_pools(32, 1) == 0 and stem_pools(224, 1) == 2  # the default teacher's stride-1 stem: digits unchanged
    # a pooled stem exports and quantizes like the rest
    big = build_student(StudentSpec(name, config), (3, 160, 160), 7).eval()
    example = np.zeros((1, 3, 160, 160), np.float32)
    fp32 = get_exporter("onnx-fp32")(ExportRequest("s", "student", tmp_path, big, example))
    calib = np.random.default_rng(0).standard_normal((8, 3, 160, 160)).astype(np.float32)
    int8 = get_exporter("onnx-int8")(ExportRequest("q", "student", tmp_path, calibration=calib, source=fp32))
    assert "MaxPool" in {n.op_type for n in onnx.load(int8.path).graph.node}


def test_mbv2_squeeze_excitation_is_a_table_entry():
    space = SPACES.get("mbv2")
    config = {**space.smallest(), "se": [0, 1, 0]}
    keys = space.blocks(config, (1, 32, 32), 10)
    assert [k[0] for k in keys].count("se") == config["depths"][1]
    assert set(keys) <= set(space.all_blocks((1, 32, 32), 10))


def test_pruned_space_prunes_the_teacher_per_stage(teacher, small_data):
    import torch

    from edgekd.search.spaces import resolve_space

    space = resolve_space("pruned", teacher.module, small_data.input_shape)
    assert len(space.stages) >= 2
    full = sum(p.numel() for p in teacher.module.parameters())
    half = build_student(StudentSpec("pruned", {"keep": [0.5] * len(space.stages)}), small_data.input_shape, 10,
                         teacher=teacher.module)
    assert sum(p.numel() for p in half.parameters()) < 0.5 * full
    assert half(torch.zeros(2, *small_data.input_shape)).shape == (2, 10)
    same = space.build({"keep": [1.0] * len(space.stages)}, small_data.input_shape, 10)
    x = torch.from_numpy(small_data.x_val[:4])
    assert torch.allclose(same(x), teacher.module.eval()(x))  # keep 1.0 is the teacher itself


def test_the_pruned_space_keeps_a_grouped_convolutions_channels_as_the_teachers():
    """With keep 0.25 on its first stage the example SE teacher's grouped conv 'blocks.0.body.3' (32 -> 32, 4
    groups) became 8 -> 28: the stages on either side of it pruned its inputs and outputs apart, and pruning
    the student toward --target-ms then failed with a bare IndexError."""
    import importlib.util
    from pathlib import Path

    import torch

    from edgekd.distill.prune import PruneConfig, _most_pruned
    from edgekd.search.spaces import resolve_space

    path = Path(__file__).parents[1] / "examples" / "byo_model" / "se_teacher.py"
    spec = importlib.util.spec_from_file_location("se_teacher_for_pruned", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    teacher = module.build()
    space = resolve_space("pruned", teacher, (1, 32, 32))
    student = space.build({"keep": [0.25] + [0.875] * (len(space.stages) - 1)}, (1, 32, 32), 10)
    grouped = {name: (m.in_channels, m.out_channels, m.groups) for name, m in teacher.named_modules()
               if isinstance(m, torch.nn.Conv2d) and m.groups > 1}
    assert grouped
    assert {name: (m.in_channels, m.out_channels, m.groups) for name, m in student.named_modules()
            if name in grouped} == grouped
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters())
    _most_pruned(student, (1, 32, 32), PruneConfig(target_ms=1.0, steps=2, max_ratio=0.5))  # no IndexError
    assert student(torch.zeros(1, 1, 32, 32)).shape == (1, 10)


def _grouped_teacher(pinned_only: bool = False):
    """build_res of the review: a grouped conv 'g' pins the stem, 'a' and 'dw'; 'b' alone prunes."""
    import torch

    class GroupedRes(torch.nn.Module):
        def __init__(self):
            super().__init__()
            block = lambda i, o, g=1: torch.nn.Sequential(  # noqa: E731
                torch.nn.Conv2d(i, o, 3, padding=1, groups=g), torch.nn.BatchNorm2d(o), torch.nn.ReLU())
            self.stem, self.a = block(1, 16), block(16, 16)
            self.dw, self.g = block(16, 16, 16), block(16, 24, 4)
            self.b = None if pinned_only else block(16, 8)
            self.head = torch.nn.Linear(24 if pinned_only else 32, 10)

        def forward(self, x):
            h = self.stem(x)
            h = self.dw(torch.nn.functional.max_pool2d(h + self.a(h), 2))
            h = self.g(h) if self.b is None else torch.cat([self.g(h), self.b(h)], 1)
            return self.head(h.mean((2, 3)))

    return GroupedRes()


def test_a_stage_a_grouped_convolution_pins_gets_a_keep_gene_of_one_and_says_why():
    """The search chose keep [0.375, 0.75] for a teacher whose grouped conv pinned the whole first stage: the
    recorded keep did nothing, and nothing said which layers pruning could not touch."""
    from edgekd.search.spaces import resolve_space, sample

    space = resolve_space("pruned", _grouped_teacher(), (1, 16, 16))
    assert space.stages == (("stem.0", "a.0"), ("dw.0", "g.0", "b.0")) and space.fixed == (0,)
    assert space.genes()[0] == ("keep", 0, (1.0,))
    assert sample(space, np.random.default_rng(0))["keep"][0] == 1.0
    assert space.note == ("the grouped convolution 'g.0' (groups=4) keeps its channels and the channels of stem.0, "
                          "a.0, dw.0, which share them (pruning cannot follow a grouped convolution's channels): only "
                          "b.0 can be pruned")
    # a search.json written before still builds: the fixed stage's recorded keep is the teacher's channels
    old = space.build({"keep": [0.375, 0.75]}, (1, 16, 16), 10)
    assert old.a[0].out_channels == 16 and old.b[0].out_channels == 6


def test_the_search_says_which_layers_a_grouped_convolution_pins(small_data, fast_profile, monkeypatch):
    from edgekd.search import proxies

    class Probed(Exception):
        pass

    monkeypatch.setattr(proxies, "make_probe", lambda *a, **k: (_ for _ in ()).throw(Probed()))
    said: list[str] = []
    with pytest.raises(Probed):  # the search itself is not the point: what it says before it starts is
        search(_grouped_teacher(), small_data, fast_profile, Budget(), SearchConfig(space="pruned"), log=said.append)
    assert said == ["search: pruned: the grouped convolution 'g.0' (groups=4) keeps its channels and the channels "
                    "of stem.0, a.0, dw.0, which share them (pruning cannot follow a grouped convolution's channels): "
                    "only b.0 can be pruned"]


def test_a_teacher_whose_grouped_convolution_pins_every_layer_has_no_pruned_space():
    from edgekd.errors import ModelError
    from edgekd.search.spaces import resolve_space

    with pytest.raises(ModelError, match=r"the 'pruned' space has nothing to prune in this teacher: the grouped "
                                         r"convolution 'g.0' .*no layer can be pruned; choose --space mbv2 or resnet"):
        resolve_space("pruned", _grouped_teacher(pinned_only=True), (1, 16, 16))


def test_a_teacher_reshaping_to_a_fixed_size_is_refused_by_the_pruned_space_by_name():
    """x.view(-1, 64 * 8 * 8) failed as a raw RuntimeError from the latency fit (exit 1)."""
    import torch

    from edgekd.errors import ModelError
    from edgekd.search.spaces import resolve_space

    class FixedView(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = torch.nn.Conv2d(1, 8, 3, stride=2, padding=1)
            self.c2 = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)
            self.fc = torch.nn.Linear(16 * 4 * 4, 10)

        def forward(self, x):
            return self.fc(self.c2(self.c1(x)).view(-1, 16 * 4 * 4))

    space = resolve_space("pruned", FixedView(), (1, 16, 16))
    with pytest.raises(ModelError, match=r"the teacher fails once its channels are pruned \(shape '\[-1, 256\]' is "
                                         r"invalid.*\): its forward reshapes to a fixed size.*x\.flatten\(1\).*"
                                         r"leave pruned out of --space"):
        space.build({"keep": [0.5] * len(space.stages)}, (1, 16, 16), 10)
    assert space.build({"keep": [1.0] * len(space.stages)}, (1, 16, 16), 10)  # the teacher itself still runs


def test_the_pruned_space_prunes_hidden_linear_layers_and_leaves_per_token_ones(small_data):
    # an MLP teacher, and a CNN with a VGG-style head, have a student family too; a transformer's per-token
    # linear layers (batch, tokens, features) are not a stage
    import torch

    from edgekd.search.spaces import resolve_space

    pixels = small_data.input_shape[1] * small_data.input_shape[2]
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(pixels, 64), torch.nn.ReLU(),
                              torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    space = resolve_space("pruned", mlp, small_data.input_shape)
    assert space.stages == (("1", "3"),)
    half = space.build({"keep": [0.5]}, small_data.input_shape, 10)
    assert [m.out_features for m in half.modules() if isinstance(m, torch.nn.Linear)] == [32, 16, 10]
    cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(8 * pixels, 48), torch.nn.ReLU(), torch.nn.Linear(48, 10))
    assert resolve_space("pruned", cnn, small_data.input_shape).stages == (("0",), ("3",))

    class Tokens(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Conv2d(1, 16, 4, stride=4)
            self.mix = torch.nn.Linear(16, 16)
            self.head = torch.nn.Linear(16, 10)

        def forward(self, x):
            tokens = self.embed(x).flatten(2).transpose(1, 2)
            return self.head(self.mix(tokens).mean(1))

    assert resolve_space("pruned", Tokens(), small_data.input_shape).stages == (("embed",),)

    class Gated(torch.nn.Module):  # squeeze-excitation with linear layers, between two convolutions
        def __init__(self):
            super().__init__()
            self.conv, self.out = torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1)
            self.squeeze, self.excite = torch.nn.Linear(8, 4), torch.nn.Linear(4, 8)
            self.head = torch.nn.Linear(8, 10)

        def forward(self, x):
            z = self.conv(x)
            gate = torch.sigmoid(self.excite(torch.relu(self.squeeze(z.mean((2, 3))))))
            return self.head(self.out(z * gate[:, :, None, None]).mean((2, 3)))

    assert resolve_space("pruned", Gated(), small_data.input_shape).stages == (("conv", "out"),)


def test_pruned_space_errors(teacher, small_data):
    import torch

    from edgekd.errors import ModelError
    from edgekd.search.spaces import resolve_space

    with pytest.raises(ConfigError, match="derived from the teacher"):
        build_student(StudentSpec("pruned", {"keep": [0.5]}), small_data.input_shape, 10)
    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(small_data.input_shape[1] ** 2, 10))
    with pytest.raises(ModelError, match="no Conv2d layer and no hidden Linear layer"):
        resolve_space("pruned", linear, small_data.input_shape)
    space = resolve_space("pruned", teacher.module, small_data.input_shape)
    with pytest.raises(ModelError, match="keep ratios but the teacher has"):
        space.build({"keep": [0.5]}, small_data.input_shape, 10)


@pytest.mark.parametrize("name", ["naswot", "synflow", "grad_norm", "zico", "diswot_init", "diswot_params"])
def test_zero_cost_proxies_are_finite_deterministic_and_leave_the_student_alone(name, teacher, small_data):
    import torch

    probe = make_probe(teacher.module, small_data.x_train[:16], small_data.y_train[:16])
    torch.manual_seed(0)
    model = build_student(StudentSpec("mbv2", SPACES.get("mbv2").smallest()), small_data.input_shape, 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a, b = PROXIES.get(name)(model, probe), PROXIES.get(name)(model, probe)
    assert np.isfinite(a) and a == pytest.approx(b, rel=1e-6)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_diswot_params_adds_the_log_of_the_parameter_count_to_diswot(teacher, small_data):
    import torch

    probe = make_probe(teacher.module, small_data.x_train[:16], small_data.y_train[:16])
    small = build_student(StudentSpec("mbv2", SPACES.get("mbv2").smallest()), small_data.input_shape, 10)
    wide = torch.nn.Sequential(small, torch.nn.Linear(10, 10))  # more parameters
    for model in (small, wide):
        n = sum(p.numel() for p in model.parameters())
        assert PROXIES.get("diswot_params")(model, probe) == pytest.approx(
            PROXIES.get("diswot")(model, probe) + np.log(n), rel=1e-6)


def test_diswot_init_scores_the_teachers_own_architecture_highest(teacher, small_data):
    """At random initialisation (the paper's setting) the teacher's architecture is identical to itself,
    whatever its trained weights: distance 0, the maximum."""
    import copy

    import torch

    probe = make_probe(teacher.module, small_data.x_train[:16], small_data.y_train[:16])
    assert probe.init is not None
    trained_away = copy.deepcopy(teacher.module)
    with torch.no_grad():
        for p in trained_away.parameters():
            p.add_(1.0)  # other weights, same architecture
    same = PROXIES.get("diswot_init")(trained_away, probe)
    other = PROXIES.get("diswot_init")(build_student(StudentSpec("mbv2", SPACES.get("mbv2").smallest()),
                                                     small_data.input_shape, 10), probe)
    assert same == pytest.approx(0.0, abs=1e-5) and other < same


def test_diswot_init_needs_linear_classifiers(small_data):
    import torch

    from edgekd.errors import ModelError

    conv_only = torch.nn.Sequential(torch.nn.Conv2d(1, 10, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    probe = make_probe(conv_only, small_data.x_train[:16], small_data.y_train[:16])
    student = build_student(StudentSpec("mbv2", SPACES.get("mbv2").smallest()), small_data.input_shape, 10)
    with pytest.raises(ModelError, match="teacher as an nn.Module ending in a Linear classifier; use --proxy diswot"):
        PROXIES.get("diswot_init")(student, probe)
    probe = make_probe(student, small_data.x_train[:16], small_data.y_train[:16])
    with pytest.raises(ModelError, match="students ending in a Linear classifier"):
        PROXIES.get("diswot_init")(conv_only, probe)


def test_search_with_diswot_init_refuses_a_teacher_without_classifier_before_measuring(small_data, monkeypatch):
    import torch

    from edgekd.errors import ModelError
    from edgekd.search import latency_model

    monkeypatch.setattr(latency_model, "latency_model", lambda *a, **k: pytest.fail("measured before the check"))
    conv_only = torch.nn.Sequential(torch.nn.Conv2d(1, 10, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    with pytest.raises(ModelError, match="diswot_init proxy needs the teacher"):
        search(conv_only, small_data, "host-cpu-1t", Budget(), SearchConfig(proxy="diswot_init", candidates=4),
               progress=False)


def test_diswot_falls_back_to_logits_when_the_teacher_has_no_feature_map(small_data):
    import torch

    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(small_data.input_shape[1] ** 2, 10))
    probe = make_probe(mlp, small_data.x_train[:16], small_data.y_train[:16])
    assert probe.cam is None
    student = build_student(StudentSpec("mbv2", SPACES.get("mbv2").smallest()), small_data.input_shape, 10)
    assert np.isfinite(PROXIES.get("diswot")(student, probe))
    assert np.isfinite(PROXIES.get("diswot_params")(student, probe))


def test_diswot_tells_students_apart_when_the_teacher_has_no_feature_map(small_data):
    """On logits, a random student's rows are all but one vector; uncentred, every student scored alike."""
    import torch

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(small_data.input_shape[1] ** 2, 32),
                              torch.nn.ReLU(), torch.nn.Linear(32, 10))
    probe = make_probe(mlp, small_data.x_train[:32], small_data.y_train[:32])
    space, rng = SPACES.get("mbv2"), np.random.default_rng(1)
    scores = []
    for _ in range(6):
        torch.manual_seed(0)
        scores.append(PROXIES.get("diswot")(build_student(StudentSpec("mbv2", space.sample(rng)),
                                                          small_data.input_shape, 10), probe))
    assert max(scores) - min(scores) > 0.1


def test_a_teachers_log_probabilities_relate_samples_as_its_logits_do():
    import torch

    from edgekd.search.proxies import _logit_relation

    logits = torch.randn(8, 10, generator=torch.Generator().manual_seed(0)) * 3
    assert torch.allclose(_logit_relation(torch.log_softmax(logits, dim=1)), _logit_relation(logits), atol=1e-5)


def test_diswot_init_relates_a_students_logits_to_a_teacher_without_a_feature_map(small_data):
    """It set the student's feature relation against the teacher's logit relation: two kinds of relation."""
    import torch

    from edgekd.search.proxies import _at_init, _distance

    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(small_data.input_shape[1] ** 2, 32),
                              torch.nn.ReLU(), torch.nn.Linear(32, 10))
    probe = make_probe(mlp, small_data.x_train[:16], small_data.y_train[:16])
    student = build_student(StudentSpec("mbv2", SPACES.get("mbv2").smallest()), small_data.input_shape, 10)
    relation, classes = _at_init(student, probe.x, probe.y, logits=True)
    expected = -(_distance(relation, probe.init[0]) + _distance(classes, probe.init[1]))
    assert PROXIES.get("diswot_init")(student, probe) == pytest.approx(expected)
    features, _ = _at_init(student, probe.x, probe.y)
    assert relation.shape == features.shape and not torch.allclose(relation, features)


def test_evolution_respects_constraints_and_beats_random():
    """On a synthetic objective, aging evolution finds better configs than as many random samples."""
    from edgekd.search.evolution import evolve
    from edgekd.search.spaces import ResNetSpace, sample
    from edgekd.types import Candidate

    space = ResNetSpace()

    def objective(cfg):
        return -abs(sum(cfg["widths"]) - 70) - 3 * abs(sum(cfg["depths"]) - 6)

    def evaluate(spec):
        feasible = spec.config["widths"][2] <= 48  # a hard constraint
        return Candidate(spec, 0, 0, float(objective(spec.config)) if feasible else float("-inf"))

    found = evolve([space], evaluate, 120, np.random.default_rng(0), population=16, tournament=4)
    assert len({c.spec.key() for c in found}) == len(found) == 120
    best = max(c.score for c in found)
    rng = np.random.default_rng(0)
    randoms = [sample(space, rng) for _ in range(120)]
    best_random = max(objective(c) for c in randoms if c["widths"][2] <= 48)
    assert best >= best_random
    assert all(c.spec.config["widths"][2] <= 48 for c in found if np.isfinite(c.score))


def test_pareto_front():
    from edgekd.search.evolution import pareto_front
    from edgekd.types import Candidate

    def cand(i, score, ms):
        return Candidate(StudentSpec("mbv2", {"i": i}), 0, 0, score, predicted_ms=ms)

    cands = [cand(0, 1.0, 1.0), cand(1, 2.0, 2.0), cand(2, 1.5, 2.5), cand(3, 3.0, 3.0), cand(4, -np.inf, 0.1)]
    assert [c.spec.config["i"] for c in pareto_front(cands)] == [0, 1, 3]


def test_search_over_several_spaces_writes_a_pareto_front(teacher, small_data, fast_profile, monkeypatch):
    import importlib

    search_module = importlib.import_module("edgekd.search.search")  # the package exports search() itself
    # the correction the unmeasured candidates were judged by is the result's, for the tables that show them
    chosen_by = search_module.measure_and_choose
    monkeypatch.setattr(search_module, "measure_and_choose", lambda *a, **k: (*chosen_by(*a, **k)[:3], {"mbv2": 1.25}))
    cfg = SearchConfig(space="mbv2,resnet", candidates=16, population=6, tournament=3, measure_top=2, rounds=1,
                       probe_batch=16, anchors=3, precision="fp32")
    result = search(teacher.module, small_data, fast_profile, Budget(latency_ms=50), cfg, progress=False)
    spaces = {c.spec.space for c in result.candidates}
    assert spaces == {"mbv2", "resnet"}
    keys = {c.spec.key() for c in result.candidates}
    assert result.pareto and set(result.pareto) <= keys
    assert result.precision == "fp32" and "fitted on 3 measured 'resnet' networks" in result.latency_source
    again = type(result).from_dict(result.to_dict())
    assert again.pareto == result.pareto
    assert result.latency_scale == again.latency_scale == {"mbv2": 1.25}


def test_stale_table_after_a_space_change_is_refused(tmp_path, fast_profile):
    import json

    from edgekd.errors import ProfileError
    from edgekd.latency.table import LatencyTable, Stamp, load_table, save_table

    stamp = Stamp.current(fast_profile, "mbv2", (1, 16, 16), 10)
    table = LatencyTable(stamp, {"fp32": {}, "int8": {}}, {"fp32": [1.0], "int8": [1.0]}, reference_ms=1.0)
    path = tmp_path / "t.json"
    save_table(table, path)
    data = json.loads(path.read_text())
    data["stamp"]["space_digest"] = "0123456789abcdef"
    path.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match="older version of search space 'mbv2'.*recalibrate"):
        load_table(fast_profile, "mbv2", (1, 16, 16), 10, path=path)


def test_cost_features_count_macs_by_hand():
    import torch

    from edgekd.search.cost_features import cost_features

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, padding=1, groups=4),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 10))
    macs, layers, one = cost_features(model, (1, 8, 8))
    assert macs * 1e6 == pytest.approx(4 * 64 * 9 + 4 * 64 * 9 + 40) and layers == 3 and one == 1.0


def test_layout_features_split_macs_by_channel_blocking():
    from edgekd.search.cost_features import layout_features

    # (in, out, groups, kernel area, output pixels): 16->20 blocks (input and output multiples of 4), 20->21
    # does not (21 outputs), 21->21 does not (21 inputs: not below the block, not a multiple of 4), 20->16
    # blocks, and a linear layer 21->10.
    records = [(16, 20, 1, 9, 64), (20, 21, 1, 9, 64), (21, 21, 1, 9, 64), (20, 16, 1, 1, 64), (21, 10, 1, 1, 1)]
    unblocked = 9 * 64 * 21 * 20 + 9 * 64 * 21 * 21 + 21 * 10
    macs = 9 * 64 * 20 * 16 + 64 * 16 * 20 + unblocked
    assert layout_features(records, "macs") == pytest.approx([macs / 1e6, 1.0])
    # nchwc16: a blocked conv computes whole blocks of 16 output channels (20 -> 32) from whole blocks of
    # input channels (20 -> 32).
    assert layout_features(records, "nchwc16") == pytest.approx(
        [(9 * 64 * 32 * 16 + 64 * 16 * 32) / 1e6, unblocked / 1e6, 1.0])
    # nchwc8: blocks of 8 (20 -> 24).
    assert layout_features(records, "nchwc8") == pytest.approx(
        [(9 * 64 * 24 * 16 + 64 * 16 * 24) / 1e6, unblocked / 1e6, 1.0])
    # A blocked conv with fewer input channels than a block reads them as they are (NCHW input).
    assert layout_features([(3, 20, 1, 9, 64)], "nchwc16")[0] == pytest.approx(9 * 64 * 32 * 3 / 1e6)
    # align4: input and output channels padded to 4, blocked only where the input is a multiple of 4.
    assert layout_features(records, "align4") == pytest.approx(
        [(9 * 64 * 20 * 16 + 9 * 64 * 24 * 20 + 64 * 16 * 20) / 1e6, (9 * 64 * 24 * 24 + 24 * 12) / 1e6, 1.0])
    # int8 fits add the layers' output elements (quantize / requantize work) before the constant.
    outputs = 64 * (20 + 21 + 21 + 16) + 10
    assert layout_features(records, "nchwc8", activations=True) == pytest.approx(
        [*layout_features(records, "nchwc8")[:-1], outputs / 1e6, 1.0])
    # "+im2col" adds the elements an unblocked k x k conv copies (k x k x input channels per output pixel):
    # 20->21 and 21->21 here; blocked convs and the linear layer copy nothing.
    assert layout_features(records, "nchwc16+im2col") == pytest.approx(
        [*layout_features(records, "nchwc16")[:-1], 64 * 9 * (20 + 21) / 1e6, 1.0])
    # ... and counts a conv that blocks only its output (3 input channels, fewer than a block) as unblocked.
    assert layout_features([(3, 20, 1, 9, 64)], "nchwc16+im2col") == pytest.approx([0.0, 9 * 64 * 32 * 3 / 1e6,
                                                                                      0.0, 1.0])
    assert layout_features(records, "nchwc8+im2col", activations=True) == pytest.approx(
        [*layout_features(records, "nchwc8+im2col")[:-1], outputs / 1e6, 1.0])


def test_a_pruned_students_layers_are_read_off_its_modules(teacher, small_data):
    """The fitted latency model's fast path: a pruned student's records, from its modules and the family's
    geometry, are the forward pass's records (in another order); other networks are refused."""
    import torch

    from edgekd.search.cost_features import conv_records, layer_pixels, records_from_modules
    from edgekd.search.spaces import resolve_space

    space = resolve_space("pruned", teacher.module, small_data.input_shape)
    assert space.fixed_geometry
    rng = np.random.default_rng(0)
    students = [space.build(space.sample(rng), small_data.input_shape, small_data.num_classes) for _ in range(3)]
    pixels = layer_pixels(students[0], small_data.input_shape)
    assert pixels
    for student in students:
        by_modules = records_from_modules(student, pixels)
        assert sorted(by_modules) == sorted(conv_records(student, small_data.input_shape))
    # A network with a layer the family lacks, and one that runs a layer twice, take the forward pass.
    other = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(10))
    other(torch.zeros(1, *small_data.input_shape))
    assert records_from_modules(other, pixels) is None

    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x):
            return self.conv(self.conv(x))

    assert layer_pixels(Twice(), small_data.input_shape) == ()


def test_choose_layout_finds_the_rule_the_latencies_follow():
    """Latencies generated from one layout's features: leave-one-out picks that layout and its fit (on the
    layout's features alone; the per-layer terms search adds are tested below)."""
    import functools

    from edgekd.search.cost_features import choose_layout as choose_with_layer_terms
    from edgekd.search.cost_features import layout_features

    choose_layout = functools.partial(choose_with_layer_terms, features=layout_features)

    rng = np.random.default_rng(0)
    networks = [[(int(rng.integers(3, 20)), int(rng.integers(8, 48)), 1, 9, 64),
                 (int(rng.integers(8, 48)), int(rng.integers(8, 48)), 1, 9, 16)] for _ in range(16)]
    for truth in ("nchwc16", "nchwc8", "align4"):
        y = np.asarray([np.dot([2.0, 5.0, 0.3], layout_features(n, truth)) for n in networks])
        layout, coef = choose_layout(networks, y)
        assert layout == truth and coef == pytest.approx([2.0, 5.0, 0.3], rel=1e-6)
    # Too few anchors for a three-term fit: plain MACs.
    assert choose_layout(networks[:5], np.ones(5))[0] == "macs"
    # With the output-elements term (int8) the fit recovers its weight too.
    y = np.asarray([np.dot([2.0, 5.0, 40.0, 0.3], layout_features(n, "nchwc8", True)) for n in networks])
    layout, coef = choose_layout(networks, y, activations=True)
    assert layout == "nchwc8" and coef == pytest.approx([2.0, 5.0, 40.0, 0.3], rel=1e-6)
    assert choose_layout(networks[:6], np.ones(6), activations=True)[0] == "macs"  # four terms need 7
    # The im2col term is fitted when the latencies carry it, and only with enough anchors for four terms.
    y = np.asarray([np.dot([2.0, 5.0, 3.0, 0.3], layout_features(n, "nchwc8+im2col")) for n in networks])
    layout, coef = choose_layout(networks, y)
    assert layout == "nchwc8+im2col" and coef == pytest.approx([2.0, 5.0, 3.0, 0.3], rel=1e-6)
    # on 6 anchors only fits of at most 3 independent terms are tried (a term constant among them adds none)
    few = choose_layout(networks[:6], y[:6])[0]
    assert np.linalg.matrix_rank(np.asarray([layout_features(n, few) for n in networks[:6]])) <= 3
    # A restricted choice (the cross-validation benchmark compares with and without the term).
    assert choose_layout(networks, y, layouts=("macs", "nchwc16"))[0] in ("macs", "nchwc16")


def test_the_fit_learns_the_cost_of_layers_and_of_gated_maps():
    """Latencies that carry a cost per layer and per squeeze-excitation-gated element besides MACs: the fit
    search uses recovers both, where the layout's features alone cannot."""
    from edgekd.search.cost_features import choose_layout, fit_features, layout_features

    rng = np.random.default_rng(3)
    networks = []
    for _ in range(24):
        net, c = [(1, 16, 1, 9, 256)], 16
        for _block in range(int(rng.integers(1, 5))):
            out = int(rng.choice([16, 32, 48]))
            net.append((c, out, 1, 9, 64))
            if rng.random() < 0.5:  # squeeze-excitation: two layers on the pooled vector, then the next layer
                net += [(out, 8, 1, 1, 1), (8, out, 1, 1, 1)]
            c = out
        networks.append(net + [(c, 10, 1, 1, 1)])  # the classifier gates nothing
    truth = [2.0, 0.8, 30.0, 0.3]  # MACs, layers, gated elements, constant
    y = np.asarray([np.dot(truth, fit_features(n, "macs")) for n in networks])
    layout, coef = choose_layout(networks, y, layouts=("macs",))
    assert layout == "macs" and coef == pytest.approx(truth, rel=1e-6)
    _layout, without = choose_layout(networks, y, layouts=("macs",), features=layout_features)
    predicted = np.asarray([np.dot(without, layout_features(n, "macs")) for n in networks])
    assert np.max(np.abs(predicted / y - 1)) > 0.1


def test_int8_depthwise_terms_count_channel_tails_and_kernel_pointers():
    """Only depthwise convolutions count: MACs of the channels past whole vectors of 16 and of 8, and one
    input pointer per kernel tap and output pixel."""
    from edgekd.search.cost_features import fit_features, int8_depthwise_terms

    # depthwise 24 channels, 3x3, 64 pixels: 8 channels past 16, none past 8; 5x5 on 20 channels, 16 pixels:
    # 4 past 16 and past 8; a dense conv and a grouped, non-depthwise conv count nothing.
    records = [(3, 24, 1, 9, 64), (24, 24, 24, 9, 64), (20, 20, 20, 25, 16), (24, 24, 2, 9, 64)]
    assert int8_depthwise_terms(records) == pytest.approx(
        [(9 * 64 * 8 + 25 * 16 * 4) / 1e6, 25 * 16 * 4 / 1e6, (9 * 64 + 25 * 16) / 1e6])
    assert int8_depthwise_terms([(16, 16, 16, 9, 64), (3, 20, 1, 9, 64)])[:2] == [0.0, 0.0]
    # int8 fits add them before the constant; fp32 fits do not.
    assert fit_features(records, "macs", activations=True)[-4:] == pytest.approx(
        [*int8_depthwise_terms(records), 1.0])
    assert len(fit_features(records, "macs", activations=True)) == len(fit_features(records, "macs")) + 4


def test_an_int8_fit_learns_the_cost_of_depthwise_channel_tails():
    """int8 latencies that charge the channels past whole vectors extra: the int8 fit recovers it, the fit
    without the depthwise terms misses students by more than 10%."""
    from edgekd.search.cost_features import choose_layout, fit_features, int8_depthwise_terms

    rng = np.random.default_rng(5)
    networks = []
    for _ in range(30):
        net, c, hw = [(1, 16, 1, 9, 256)], 16, 256
        for _block in range(int(rng.integers(1, 4))):
            hidden = int(c * rng.choice([2, 3, 4, 6]))
            hw = hw // int(rng.choice([1, 4]))
            out = int(rng.choice([12, 16, 24, 32]))
            net += [(c, hidden, 1, 1, hw), (hidden, hidden, hidden, int(rng.choice([9, 25])), hw),
                    (hidden, out, 1, 1, hw)]
            c = out
        networks.append(net + [(c, 10, 1, 1, 1)])
    base = [fit_features(n, "macs", activations=True)[:-4] for n in networks]
    truth_base = [1.0, 0.0, 0.5, 0.0]  # MACs, output elements, layers, gated elements
    y = np.asarray([np.dot(truth_base, b) + np.dot([40.0, 20.0, 10.0], int8_depthwise_terms(n)) + 0.2
                    for b, n in zip(base, networks)])
    _layout, coef = choose_layout(networks, y, activations=True, layouts=("macs",))
    predicted = np.asarray([np.dot(coef, fit_features(n, "macs", activations=True)) for n in networks])
    assert np.max(np.abs(predicted / y - 1)) < 1e-6
    _layout, without = choose_layout(networks, y, activations=True, layouts=("macs",),
                                     features=lambda r, lay, a: fit_features(r, lay, a)[:-4] + [1.0])
    predicted = np.asarray([np.dot(without, fit_features(n, "macs", activations=True)[:-4] + [1.0])
                            for n in networks])
    assert np.max(np.abs(predicted / y - 1)) > 0.1


def test_gated_elements_count_the_map_before_each_squeeze_excitation():
    from edgekd.search.cost_features import gated_elements

    se_block = [(3, 16, 1, 9, 64), (16, 4, 1, 1, 1), (4, 16, 1, 1, 1), (16, 32, 1, 1, 64), (32, 10, 1, 1, 1)]
    assert gated_elements(se_block) == 16 * 64  # the first layer's map, once; the classifier gates nothing
    assert gated_elements([(3, 16, 1, 9, 64), (16, 10, 1, 1, 1)]) == 0
    assert gated_elements([(16, 4, 1, 1, 1), (4, 16, 1, 1, 1), (16, 8, 1, 1, 4)]) == 0  # nothing before it


def test_params_without_any_budget_warns_that_it_picks_the_largest_student(teacher, small_data, fast_profile):
    lines: list[str] = []
    params = replace(CFG, proxy="params")
    search(teacher.module, small_data, fast_profile, Budget(), params, progress=False, log=lines.append)
    assert any(line.startswith("warning: search: no --budget-ms or --max-size-kb") for line in lines)
    lines.clear()
    search(teacher.module, small_data, fast_profile, Budget(max_size_kb=500), params, progress=False,
           log=lines.append)
    assert not any("no --budget-ms" in line for line in lines)


def test_without_a_log_warnings_still_reach_the_user_and_progress_stays_quiet(teacher, small_data, fast_profile,
                                                                             capsys):
    import warnings

    from edgekd.errors import EdgeKDWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        search(teacher.module, small_data, fast_profile, Budget(), replace(CFG, proxy="params"), progress=False)
    said = [str(w.message) for w in caught if issubclass(w.category, EdgeKDWarning)]
    assert any(m.startswith("search: no --budget-ms or --max-size-kb") for m in said)
    assert not any(m.startswith("warning") for m in said)  # the prefix the CLI prints is the category here
    assert capsys.readouterr() == ("", "")


def test_zico_is_the_log_of_the_summed_inverse_coefficient_of_variation_per_layer(small_data):
    """One Linear layer, two halves of the probe batch: log(sum over weights of mean|g| / std(g)), weights
    whose gradient is the same in both halves left out."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(small_data.input_shape[1] ** 2, 10))
    x = small_data.x_train[:16].copy()
    x[..., 0, 0] = 0  # a blank pixel: its weights get no gradient in either half
    probe = make_probe(model, x, small_data.y_train[:16])
    grads = []
    for xb, yb in ((probe.x[:8], probe.y[:8]), (probe.x[8:], probe.y[8:])):
        model.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        grads.append(model[1].weight.grad.flatten().double().clone())
    g = torch.stack(grads)
    std, mean_abs = (g[0] - g[1]).abs() / 2, g.abs().mean(0)
    varies = std > 0
    assert 0 < varies.sum() < varies.numel()
    expected = float(torch.log((mean_abs[varies] / std[varies]).sum()))
    assert PROXIES.get("zico")(model, probe) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("settings, message", [
    ({"seed": -1}, "seed -1 is not a whole number from 0 to"),
    ({"candidates": "10"}, "search setting candidates is '10', not a whole number of at least 1; pass --candidates"),
    ({"candidates": 2.5}, "search setting candidates is 2.5, not a whole number"),
    ({"candidates": 0}, "search setting candidates is 0, not a whole number of at least 1; pass --candidates 1"),
    ({"anchors": 2}, "search setting anchors is 2, not a whole number of at least 3; pass --latency-anchors 3 or more "
                   "(SearchConfig(anchors=...) in Python)"),
    ({"space": 3}, "space 3 is not a space name"),
])
def test_search_settings_the_search_would_fail_on_later_are_refused_by_name(settings, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SearchConfig(**settings)


def test_search_spaces_may_be_given_as_a_list():
    assert SearchConfig(space=["mbv2", "resnet"]).spaces() == ["mbv2", "resnet"]


def test_distill_settings_torch_or_numpy_would_fail_on_later_are_refused_by_name():
    from edgekd.types import DistillConfig

    with pytest.raises(ConfigError, match="seed -1 is not a whole number"):
        DistillConfig(seed=-1)
    with pytest.raises(ConfigError, match="weight decay must be at least 0, got -0.01"):
        DistillConfig(weight_decay=-0.01)


def test_the_pruned_space_keeps_a_conv_classifier_out_of_its_stages(small_data):
    # a 1x1-conv classifier before global pooling is the output layer: no stage, and never pruned
    import torch

    from edgekd.search.spaces import resolve_space

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 10, 1),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    space = resolve_space("pruned", model, small_data.input_shape)
    assert space.stages == (("0",),)
    half = space.build({"keep": [0.5]}, small_data.input_shape, 10)
    assert half(torch.zeros(2, *small_data.input_shape)).shape == (2, 10)


def test_build_student_refuses_a_config_without_a_gene_it_builds_from_naming_it():
    from edgekd.errors import ConfigError

    config = SPACES.get("mbv2").smallest()
    del config["stem"]
    with pytest.raises(ConfigError, match="space 'mbv2' has no 'stem'.*search.json"):
        build_student(StudentSpec("mbv2", config), (1, 8, 8), 10)
    # an optional gene left out, or a width the search would not sample, still builds
    hand = {"stem": 12, "widths": [12, 24, 32], "depths": [1, 2, 2], "expands": [3, 3, 3], "kernels": [3, 3, 3]}
    assert sum(p.numel() for p in build_student(StudentSpec("mbv2", hand), (1, 16, 16), 10).parameters()) > 0


def test_search_hands_the_callers_torch_generator_back_as_it_was(teacher, small_data, fast_profile):
    """The search seeds torch's generator for each candidate's weights: it left it seeded so, whatever the
    caller had seeded before."""
    import torch

    torch.manual_seed(5)
    search(teacher.module, small_data, fast_profile, Budget(latency_ms=50, max_size_kb=60),
           replace(CFG, candidates=4), progress=False)
    after = torch.rand(2)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(2))


def test_a_space_smaller_than_candidates_is_said(teacher, small_data, fast_profile):
    """--candidates 200 on a teacher's pruned space stopped at 49 without a word, its progress line unfinished."""
    from edgekd.search.spaces import resolve_space

    space = resolve_space("pruned", teacher.module, small_data.input_shape)
    lines: list[str] = []
    asked = 8 ** len(space.stages) + 5  # more than the space holds
    result = search(teacher.module, small_data, fast_profile, Budget(latency_ms=50),
                    replace(CFG, space="pruned", candidates=asked, proxy="params"), progress=False, log=lines.append)
    assert result.evaluated < asked
    assert (f"search: scored {result.evaluated}/{asked} candidates: the space holds few distinct students (the "
            f"evolution drew ones already scored {50 * asked} times); pass --candidates {result.evaluated} or fewer, "
            "or another --space") in lines
