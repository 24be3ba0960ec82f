"""The search and distill stages run on their own (``edgekd search``, ``edgekd distill``), and the
distillation step compress runs inside its chain."""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekd.api_args import require_config
from edgekd.errors import ConfigError, OutputError, api_log
from edgekd.fsutil import (
    atomic_dir,
    check_new_file,
    check_new_output,
    check_own_folder,
    remove_path,
    set_aside,
    settled,
    sha256,
    through_link,
    write_json,
    writing,
)
from edgekd.pipeline.config import CompressConfig, config_fields, input_paths, with_search_budget
from edgekd.run_inputs import Log, check_teacher_files, near_chance, recipe, run_data, run_teacher, sampled
from edgekd.search_file import search_record, search_settings


def run_search(config: CompressConfig, out: str | Path, force: bool = False, log: Log | None = None) -> Any:
    """The search stage alone: rank candidates for ``config``'s teacher, data, profile and budget and
    write the result to ``out`` (a JSON file ``compress --search`` accepts); ``force`` or ``config.force``
    replaces an existing one, as ``run_distill`` takes ``config.force``."""
    from edgekd.torchrun import check_alone

    require_config("config", config, CompressConfig, "out='edgekd-out', budget_ms=0.5")
    check_alone("search")
    log = api_log(log)
    check_new_file(out, force or config.force, "--out", input_paths(config))
    with writing(out, "search"):
        return _searched(config, Path(out), log)


def _searched(config: CompressConfig, out: Path, log: Log) -> Any:
    """run_search() once its --out is held."""
    from edgekd.latency.runners import probe_device
    from edgekd.profiles import load_profile
    from edgekd.search import search

    check_teacher_files(config)  # the teacher loads after the data, which can take minutes
    profile = load_profile(config.profile)
    probe_device(profile)  # a search always measures its candidates on the device
    data = run_data(config, log)
    teacher = run_teacher(config, data, log)
    result = search(teacher.module, data, profile, config.budget, config.search_config(),
                    progress=config.progress, log=log)
    write_json(out, search_record(result, profile, config.budget, data, teacher.module,
                                  settings=search_settings(config)))
    return result


def run_distill(config: CompressConfig, out: str | Path, resume: bool = False, log: Log | None = None,
                on_checkpoint: Callable[[Path], None] | None = None) -> Any:
    """The distill stage alone: train the student of ``config.search_file`` (or of a fresh search) from
    the teacher and write ``out``/: student.pt (state dict), student-fp32.onnx, distill.json, search.json
    (written before the first epoch: the search the run trains from, for ``resume`` and ``compress --distilled``),
    and checkpoint.pt after every epoch (``resume`` continues a killed run from it, with the search settings and
    budget it started with). With ``config.force`` an earlier run in ``out`` is replaced once this one has written
    its first checkpoint (or finished); until then a failure leaves it as it was. ``on_checkpoint(path)`` hears
    of every checkpoint this run writes.

    Under ``torchrun`` every process trains and rank 0 alone says what happens and writes ``out``: the others
    would replace its folder and files as it writes them."""
    from edgekd.distill.ddp import check_launch, launched
    from edgekd.distill.prune import check_one_process
    from edgekd.pipeline.resumed import as_started, note_leftovers, nothing_to_resume

    require_config("config", config, CompressConfig, "out='edgekd-out', budget_ms=0.5")
    log = api_log(log)
    processes, rank = launched()
    if config.target_ms is not None:
        check_one_process()
    if resume:
        check_own_folder(out, "--out")
    # a symlinked --out ('latest' pointing at a run's folder) is the folder it points to, the link kept: --force
    # set the link itself aside and made a folder in its place, which whatever read through the link never saw
    out = through_link(out) if Path(out).is_symlink() else Path(out)  # as given otherwise, said as given
    if resume and (out / "search.json").is_file():  # the budget and search the run started with
        config = as_started(config, out, log)
    elif config.search_file:  # recorded in distill.json, for `compress --distilled` to validate against
        config = with_search_budget(config, log)
    if resume:  # before what a run of several processes needs: under torchrun this was said as a missing search
        if rank == 0:
            note_leftovers(out, log)
        if not (out / "checkpoint.pt").is_file():
            raise nothing_to_resume(out)
    check_launch(config.batch_size)  # before the data and teacher load
    if processes > 1 and not config.search_file and not (resume and (out / "search.json").is_file()):
        raise ConfigError(f"under torchrun each of the {processes} processes would search on its own, measuring "
                          "anew, and could choose another student", "run `edgekd search --out search.json` first, "
                          "and distill with --search search.json")
    if rank != 0:
        return _distill_into(config, out, resume, lambda _msg: None, write=False)
    with writing(out, "distill"):  # the other processes write nothing
        return _distill_rank0(config, out, resume, log, on_checkpoint)


def _distill_rank0(config: CompressConfig, out: Path, resume: bool, log: Log,
                   on_checkpoint: Callable[[Path], None] | None) -> Any:
    """run_distill() in the process that writes ``out``, once it holds it."""
    if not resume:
        check_new_output(out, True, input_paths(config))  # replaced below only with --force
    if resume and config.target_ms is not None:
        # said before the data loads; pruning-aware KD writes no checkpoint, so this run was plain or QAT KD
        raise ConfigError(f"--target-ms does not apply with --resume: the run in '{out}' trains plain or "
                          "quantization-aware KD (pruning-aware KD writes no checkpoint to resume)",
                          "resume without --target-ms, or start a pruning run over with --force")
    if resume and not config.search_file and not (out / "search.json").is_file():
        # Searching again would measure anew and could choose another student than the checkpoint's.
        raise ConfigError(f"'{out}' holds a checkpoint but no search.json recording the student it trains (a run "
                          "started with --search by an edgekd that wrote it only at the end)",
                          "resume with the --search FILE the run started with")
    if resume:
        from edgekd.distill.checkpoint import check_resumable

        # other training flags were found only once the data and teacher had loaded (load_checkpoint)
        check_resumable(out / "checkpoint.pt", config.distill_config())
    check_teacher_files(config)  # the teacher loads after the data, which can take minutes
    earlier, created = None, not out.exists()
    if not resume and not created and any(out.iterdir()):
        if not config.force:
            raise _not_empty(out)
        earlier = set_aside(out, "--out")
        until = ("finishes (pruning writes no checkpoint)" if config.target_ms is not None
                 else "has its first checkpoint")
        log(f"distill: the earlier run in {out} is kept as {earlier} until this one {until}")
    wrote = False

    def checkpointed(path: Path) -> None:
        nonlocal earlier, wrote
        wrote = True
        if earlier is not None:  # this run can be resumed now: the earlier one is replaced, as the log said
            aside, earlier = earlier, None
            remove_path(aside)
        if on_checkpoint is not None:
            on_checkpoint(path)

    try:
        trained = _distill_into(config, out, resume, log, on_checkpoint=checkpointed)
    except BaseException:
        # A run with a checkpoint to resume from keeps its folder (and --force has then replaced the earlier
        # run). One without (a mistake found after the search, Ctrl-C in the first epoch, any pruning run)
        # leaves --out as it found it: the earlier run put back, and nothing of its own that would stop a rerun.
        if not resume and not wrote:
            _leave_as_found(out, earlier, created)
        raise
    if earlier is not None:  # finished without a checkpoint (pruning): only now is the earlier run replaced
        from edgekd.distill.checkpoint import interrupts_held

        with interrupts_held():
            remove_path(earlier)
    return trained


def _leave_as_found(out: Path, earlier: Path | None, created: bool) -> None:
    """Undo what a --force or new run that wrote no checkpoint did to ``out``: the earlier run put back, and
    nothing of its own left that would stop a rerun. Ctrl-C and SIGTERM are held meanwhile: a second Ctrl-C
    (users press it twice; torchrun sends its workers one of its own) landed between the removal and the rename,
    and the earlier run was then deleted or left set aside with no word. Should the rename fail, the earlier run
    stays where it was set aside, for the message to say, and is never removed."""
    from edgekd.distill.checkpoint import interrupts_held

    done = False
    while not done:
        try:
            with interrupts_held():
                if earlier is not None or created:
                    remove_path(out)
                else:
                    for name in ("search.json", ".final"):
                        remove_path(out / name)
                if earlier is not None:
                    earlier.rename(settled(out))
                done = True
        except KeyboardInterrupt:  # one more, delivered once the signals are held (done), or before (tried again)
            if done:
                raise


def _not_empty(out: Path) -> OutputError:
    """The refusal of a non-empty --out without --force: --resume is offered only where there is a checkpoint to
    resume (it was refused in turn, "nothing to resume"), and an earlier run a --force run left beside the folder
    is said, with the command that puts it back."""
    from edgekd.distilled import put_back, set_aside_runs

    problem = f"output folder '{out}' is not empty"
    if (out / "checkpoint.pt").is_file():
        return OutputError(problem, "choose another --out, pass --resume to continue its run, or --force to start "
                                    "over (resume=True, or CompressConfig(force=True), from Python)")
    left = set_aside_runs(out)
    if left:
        return OutputError(f"{problem}: a --force run into it was stopped before its first checkpoint, and the "
                           f"earlier run it replaced is in '{left[-1]}'", f"put that run back with "
                           f"{put_back(out, left[-1])}, choose another --out, or pass --force to start over")
    return OutputError(problem, "choose another --out, or pass --force to start over (CompressConfig(force=True) "
                                "from Python)")


def _distill_into(config: CompressConfig, out: Path, resume: bool, log: Log, write: bool = True,
                  on_checkpoint: Callable[[Path], None] | None = None) -> Any:
    import torch

    from edgekd.export import ExportRequest, get_exporter
    from edgekd.latency.runners import probe_device
    from edgekd.pipeline.resumed import run_settings
    from edgekd.profiles import load_profile

    profile = load_profile(config.profile)
    # the device is needed by a search (none with --search, nor on resuming one that kept its search.json) and by
    # pruning toward --target-ms
    searches = not config.search_file and not (resume and (out / "search.json").is_file())
    if searches or config.target_ms is not None:
        probe_device(profile)
    if config.search_file:  # before the data and the teacher, which may train for minutes
        from edgekd.search_file import check_search_profile

        check_search_profile(config.search_file, profile)
    data = run_data(config, log)
    teacher = run_teacher(config, data, log)
    made_from = run_fingerprints(teacher.module, data)  # before training, which may shift images in place
    started = run_settings(config, out, resume)
    result, trained = search_and_distill(config, teacher, data, profile, log, checkpoint=out / "checkpoint.pt",
                                          resume=resume, run=started if write else None, on_checkpoint=on_checkpoint)
    if not write:
        return trained
    with atomic_dir(out / ".final", force=True) as staging:
        torch.save(trained.model.state_dict(), staging / "student.pt")
        if config.qat_epochs:  # calibrated on images of every class, not the first classes' first images
            calibration = data.x_train[sampled(len(data.x_train), 256, config.seed)]
            art = get_exporter("onnx-int8-qat")(ExportRequest("student-int8", "student", staging, trained.model,
                                                              data.x_val[:1], calibration=calibration,
                                                              opset=config.export_opset))
        else:
            art = get_exporter("onnx-fp32")(ExportRequest("student-fp32", "student", staging, trained.model,
                                                          data.x_val[:1], opset=config.export_opset))
        from edgekd.data import split_seed_of
        from edgekd.onnx_metadata import stamp_data_metadata

        stamp_data_metadata(art, data, split_seed_of(data))  # the seed that dealt the data, not --seed
        # what `compress --distilled` reports from
        write_json(staging / "search.json", search_record(result, profile, config.budget, data, teacher.module,
                                                          run=started))
        # config.out is compress's folder (distill takes --out apart), and a resumed run's search file is its run's
        done = {**recipe(config, config_fields()), "out": str(out), "search_file": started["search_file"]}
        write_json(staging / "distill.json", {
            "student": result.chosen.spec.to_dict(), "pruned": was_pruned(trained),
            "distill": trained.to_dict(), "recipe": done,
            "data": data.describe(), "teacher": {"source": teacher.source, "origin": teacher.origin},
            "fingerprints": {**made_from, "student_sha256": sha256(staging / "student.pt")}})
    for path in (out / ".final").iterdir():
        path.replace(out / path.name)
    (out / ".final").rmdir()
    return trained


def run_fingerprints(teacher: Any, data: Any) -> dict[str, str]:
    """What distill.json records of the teacher's weights and of every training and validation image, for
    `compress --distilled` to refuse another teacher file or other images under the same names."""
    from edgekd.distill.checkpoint import images_fingerprint, weights_fingerprint

    return {"teacher_weights": weights_fingerprint(teacher),
            "images": images_fingerprint(data.x_train, data.y_train),
            "val_images": images_fingerprint(data.x_val, data.y_val)}


def was_pruned(trained: Any) -> bool:
    """Whether pruning removed channels: a --target-ms the student already met prunes nothing, and its
    distill.json said "pruned": true with no pruning steps on record."""
    return bool(trained.pruning and trained.pruning.get("steps"))


def search_and_distill(config: CompressConfig, teacher: Any, data: Any, profile: Any, log: Log,
                        checkpoint: Path | None = None, resume: bool = False,
                        teacher_exported: bool = False, run: dict[str, Any] | None = None,
                        on_checkpoint: Callable[[Path], None] | None = None) -> tuple:
    """Search (or reuse ``config.search_file``) and distill the chosen student. With ``run`` (a distill run's
    settings) the search it trains from is written beside ``checkpoint`` before the first epoch, as
    search.json, for a resume to train the same student."""
    import torch

    from edgekd.search import build_student, search

    search_file = config.search_file
    # A resumed run trains the student its search chose: searching again measures anew, and near a budget's
    # edge could choose another student, whose checkpoint would then be refused.
    earlier = checkpoint.parent / "search.json" if checkpoint is not None else None
    fix = None
    if resume and not search_file and earlier is not None and earlier.is_file():
        search_file = str(earlier)
        fix = (f"resume with the data, profile and budget the run in '{earlier.parent}' started with, or start it "
               "over without --resume")
    if search_file:
        from edgekd.search_file import load_search

        result = load_search(search_file, data, profile, config.budget_ms, teacher.module, log,
                             config.max_size_kb, fix=fix, ort=config.ort)
        log(f"search: reusing {search_file}")
        if config.qat_epochs and result.chosen.spec.space == "pruned":  # as --space pruned is, before it trains
            _check_pruned_qat(teacher.module, torch.as_tensor(data.x_train[:2]),
                              f"the student of '{search_file}' is a 'pruned' one")
        # A resume without --search reuses it: searching again could choose another student. A resumed run's
        # own is never replaced: another student's would leave its checkpoint refused and the run not resumable.
        if (run is not None and earlier is not None and Path(search_file).resolve() != earlier.resolve()
                and not (resume and earlier.is_file())):
            write_json(earlier, search_record(result, profile, config.budget, data, teacher.module, run=run))
    else:
        _check_teacher_before_search(config, teacher.module, torch.as_tensor(data.x_train[:2]))
        log(f"search: {config.candidates} '{config.space}' candidates ranked by '{config.proxy}'")
        result = search(teacher.module, data, profile, config.budget, config.search_config(),
                        progress=config.progress, log=log)
        if run is not None and earlier is not None:
            write_json(earlier, search_record(result, profile, config.budget, data, teacher.module, run=run))
    chosen = result.chosen
    log(f"search: chose {chosen.spec.space} {chosen.spec.config} ({chosen.params:,} params, "
        f"{chosen.latency_ms:.3f} ms {result.precision} measured)")
    with torch.random.fork_rng(devices=[]):  # the student's seeded weights; the caller's generator kept as it was
        torch.manual_seed(config.seed)
        student = build_student(chosen.spec, data.input_shape, data.num_classes, teacher=teacher.module)
    # A pruned student runs the teacher's forward, so compress's export of the teacher has checked it already.
    if chosen.spec.space == "pruned" and not teacher_exported:
        _check_exports(config, student, data)
    trained = train_student(config, student, teacher.module, data, profile, log, checkpoint, resume, on_checkpoint)
    return result, trained


def _check_exports(config: CompressConfig, student: Any, data: Any) -> None:
    """A ``pruned`` student runs the teacher's own forward: one torch.export cannot trace is refused before
    it trains, not when its file is written after (``distill`` exports no teacher to find out first)."""
    import copy

    from edgekd.export import ExportRequest, get_exporter

    with tempfile.TemporaryDirectory(prefix="edgekd-check-") as tmp:
        get_exporter("onnx-fp32")(ExportRequest("student-fp32", "student", Path(tmp), copy.deepcopy(student),
                                                data.x_val[:1], opset=config.export_opset))


def _check_teacher_before_search(config: CompressConfig, teacher: Any, example: Any) -> None:
    """What distillation would refuse about the teacher, refused before a search of minutes: the layers the
    feature losses tap (the student's are known only once one is chosen), and, when every student is the
    teacher's own layers (``--space pruned``), layers QAT cannot mirror."""
    from edgekd.distill.teacher_side import teacher_taps, uses_features

    distill_config = config.distill_config()
    if uses_features(distill_config.losses):
        from edgekd.distill.taps import output_shapes

        teacher_taps(teacher, output_shapes(teacher, example)[1], distill_config.teacher_taps, distill_config.losses)
    spaces = config.search_config().spaces()
    if config.qat_epochs and "pruned" in spaces:
        from edgekd.distill.qat_plan import plan_qat

        try:
            plan_qat(teacher, example)
        except ConfigError as exc:
            if spaces == ["pruned"]:  # every student is the teacher's layers: its forward is what QAT cannot follow
                raise ConfigError(f"{exc.problem}: with --space pruned every student is the teacher's own layers, "
                                  "so the teacher's forward is what quantization-aware training cannot follow",
                                  f"choose --space mbv2 or resnet, or {exc.fix}") from None
            # a search of several spaces may choose a pruned student, found unfit for QAT after the search
            raise ConfigError(f"{exc.problem}, and --space {config.space} may choose a 'pruned' student, which is "
                              "the teacher's own layers",
                              "leave pruned out of --space" + (f", or {exc.fix}" if exc.fix else "")) from None


def _check_pruned_qat(teacher: Any, example: Any, said: str) -> None:
    """A pruned student is the teacher's own layers: one whose forward QAT cannot follow was refused in the
    trainer's words ("wrap the Sequential"), which name no way out for a student edgekd built."""
    from edgekd.distill.qat_plan import plan_qat

    try:
        plan_qat(teacher, example)
    except ConfigError as exc:
        other = "train a student of another space (`edgekd search --space mbv2` or resnet)"
        fix = (f"{other}, or {exc.fix}" if "--qat-epochs" in (exc.fix or "")
               else f"drop --qat-epochs, {other}" + (f", or {exc.fix}" if exc.fix else ""))
        raise ConfigError(f"{exc.problem}: {said}, the teacher's own layers, so the teacher's forward is what "
                          "quantization-aware training cannot follow", fix) from None


def _taps_said(config: CompressConfig, student: Any, teacher: Any, data: Any) -> str:
    """The layers the feature losses tap, for the distill line: chosen by default they were said nowhere."""
    import torch

    from edgekd.distill.teacher_side import tap_pairs, uses_features

    distill_config = config.distill_config()
    if not uses_features(distill_config.losses):
        return ""
    pairs = tap_pairs(student, teacher, torch.as_tensor(data.x_train[:2]), distill_config, distill_config.losses)
    chosen = "given" if distill_config.teacher_taps else "each model's last feature map"
    return f", tapping {', '.join(f'{s} -> {t}' for s, t in pairs)} (student -> teacher layers, {chosen})"


def train_student(config: CompressConfig, student: Any, teacher: Any, data: Any, profile: Any, log: Log,
                  checkpoint: Path | None = None, resume: bool = False,
                  on_checkpoint: Callable[[Path], None] | None = None) -> Any:
    """The distill stage: KD with the configured losses (QAT in its last epochs), or pruning-aware KD
    toward ``config.target_ms``. Returns a DistillResult."""
    from edgekd.distill.trainer import batches_per_epoch, distill

    prune = config.prune_config()
    if prune is not None:
        from edgekd.distill.prune import prune_distill, prune_epochs_text

        log(f"distill: pruning-aware KD toward {prune.target_ms:g} ms ({prune.precision}) on '{profile.name}': "
            f"{prune_epochs_text(prune)}")
        if resume:  # run_distill says so first, naming the folder; this is the API's stage function alone
            raise ConfigError("--resume continues plain or quantization-aware KD, not pruning-aware KD",
                              "run the pruning again without --resume")
        pruned = prune_distill(student, data, config.distill_config(), prune, profile, teacher=teacher, log=log,
                               progress=config.progress)
        log(f"distill: pruned to {pruned.measured_ms:.3f} ms measured (target {prune.target_ms:g} ms)" if pruned.steps
            else f"distill: nothing pruned, the student was under the target already: {pruned.measured_ms:.3f} ms "
                 f"measured (target {prune.target_ms:g} ms), distilled for {config.epochs} "
                 f"epoch{'s' * (config.epochs != 1)}")
        if not pruned.reached:
            log(f"warning: pruning ended at {pruned.measured_ms:.3f} ms measured, over --target-ms "
                f"{prune.target_ms:g} by more than the 10% measurement noise allows: a lower --target-ms leaves "
                "room for the noise; `edgekd validate` measures the student again")
        record = {k: v for k, v in pruned.to_dict().items() if k != "history"}  # the history is the result's own
        trained = dataclasses.replace(pruned.last, model=pruned.model, history=pruned.history, pruning=record)
    else:
        from edgekd.distill.losses import reads

        read = reads(config.distill_config().losses, config.labels)
        # what the losses ignore is not said as if it applied
        said = ", ".join(f"{short}={getattr(config, name)}"
                         for name, short in (("temperature", "T"), ("alpha", "alpha")) if read[name])
        log(f"distill: {config.epochs} epoch{'s' * (config.epochs != 1)}, losses {config.losses}"
            + (f" ({said})" if said else "") + _taps_said(config, student, teacher, data)
            + (", training images shifted (--no-augment: in place)" if config.augment else "")
            + (f", the last {config.qat_epochs} quantization-aware" if config.qat_epochs else ""))
        trained = distill(student, data, config.distill_config(), teacher=teacher, progress=config.progress,
                          checkpoint=checkpoint, resume=resume, log=log, on_checkpoint=on_checkpoint)
        log(f"distill: {trained.kept_line()}")
    if trained.selected_on == "val_labels" and near_chance(trained.best_val_accuracy, data.num_classes):
        # Few images and few epochs leave a student untrained with no error anywhere; say why here, where
        # the fix is, rather than only as an accuracy drop in the final table.
        steps = config.epochs * batches_per_epoch(len(data.y_train), config.batch_size)
        epochs = f"{config.epochs} epoch{'s' * (config.epochs != 1)}"
        log(f"warning: the student is still near chance ({trained.best_val_accuracy * 100:.1f}% on validation, "
            f"chance {100 / data.num_classes:.1f}%) after about {steps} optimizer steps ({epochs} of "
            f"{len(data.y_train)} training images in batches of {config.batch_size}): train longer (--epochs), "
            "or with a smaller --batch-size or a higher --lr")
    return trained

