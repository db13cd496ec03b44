"""The sidebar on every page: launch a sweep, watch the queue live, cancel, import an SAE trained elsewhere.

Launching only enqueues jobs in DuckDB and makes sure a worker process is running (with the ray
backend, a Ray driver process, which registers as a worker and writes the same columns); the live panel
is an ``st.fragment(run_every=…)`` that rereads the jobs table, so the rest of the page never
reruns for it and stays usable while a sweep trains.
"""

from __future__ import annotations

import math
import time

import streamlit as st

from core.errors import LabError
from engine.cli_args import comma_list
from engine.sweeps.spec import PRESETS, SweepSpec
from engine.training import architectures
from lab_app import data, import_panel

PRESET_HELP = {
    "topk-sweep": "Seed experiment 2: k = 48, 24, 16 at d_sae 2048, layer 2",
    "layer-sweep": "Seed experiment 1: every layer at k = 16, d_sae 2048",
    "everything": "Every layer × k ∈ {48, 24, 16} × 2 training domains = 36 SAEs",
    "architectures": "Every built-in architecture × L0 ∈ {8, 16, 32} on layer 2 × 2 domains = 30 SAEs",
    "custom grid": "Pick layers, k, d_sae, architecture and domains",
}


def _ints(text: str, what: str) -> list[int]:
    try:
        vals = [int(x) for x in text.replace(";", ",").split(",") if x.strip()]
    except ValueError:
        raise LabError(f"{what} must be whole numbers separated by commas, e.g. 48, 24, 16") from None
    if not vals:
        raise LabError(f"give at least one {what}")
    return vals


def launcher() -> None:
    # deferred: loads torch, which the app's pages start without
    from engine.sweeps.launch import ensure_ray_driver, ensure_workers
    from engine.sweeps.queue import enqueue_sweep

    with st.expander("Launch a sweep", icon=":material/rocket_launch:", expanded=False):
        choice = st.selectbox("Sweep", list(PRESET_HELP), key="sw_preset",
                              help="\n".join(f"{k}: {v}" for k, v in PRESET_HELP.items()))
        params: dict = {}
        base: dict = {}
        if choice == "custom grid":
            layers = st.multiselect("Layers", list(range(6)), default=[2], key="sw_layers")
            ks = st.text_input("k (comma-separated)", "48, 24, 16", key="sw_k")
            d_saes = st.text_input("d_sae (comma-separated)", "2048", key="sw_dsae")
            archs = st.multiselect("Architecture", architectures.names(), default=["topk"], key="sw_arch",
                                   help="\n".join(f"{n}: {architectures.get(n).summary}" for n in architectures.names()))
            domains = st.text_input("Domains", "prose, code", key="sw_domains",
                                    help="prose, code, wikitext, python-code, or name=path")
        with st.popover("Budget and workers", icon=":material/tune:"):
            tokens = st.number_input("Tokens per domain", 2_000, 10_000_000, 100_000, step=10_000, key="sw_tokens")
            epochs = st.number_input("Epochs", 0.5, 100.0, 6.0, step=0.5, key="sw_epochs")
            backend = st.radio("Run the jobs on", list(BACKENDS), key="sw_backend", horizontal=True,
                               help="\n".join(f"{k}: {v}" for k, v in BACKENDS.items()))
            address = ""
            if backend == "ray":
                address = st.text_input("Ray address", "", key="sw_ray_address", placeholder="empty: Ray on this machine",
                                        help="host:port of a Ray cluster's head (`ray start --head` prints it); empty "
                                             "starts a Ray runtime on this machine. Ray belongs on a trusted network.")
                workers = 1
                threads = st.number_input("CPUs per job", 1, 16, 1, key="sw_ray_threads")
            else:
                workers = st.number_input("Worker processes", 1, 4, 1, key="sw_workers",
                                          help="On 2 cores, 2 workers × 1 thread train faster in total than 1 × 2.")
                threads = st.number_input("Threads per worker (0 = all cores)", 0, 16, 0, key="sw_threads")
        steps = training_steps(int(tokens), float(epochs))
        if steps < MIN_STEPS:
            st.warning(f"This budget trains each SAE for about {steps} step(s) (< {MIN_STEPS}): the lab will flag them as "
                       "unfit for interpretability. Raise the tokens or the epochs under Budget and workers.")
        if st.button("Launch", type="primary", key="sw_launch", icon=":material/play_arrow:"):
            try:
                if choice == "custom grid":
                    params = {"layer": layers or [2], "k": _ints(ks, "k"), "d_sae": _ints(d_saes, "d_sae")}
                    if archs:
                        params["architecture"] = archs
                    base["data"] = {"domains": comma_list("Domains", domains, "prose, code")}
                    spec = SweepSpec.from_dict({"name": "custom", "parameters": params, "base": base})
                else:
                    spec = SweepSpec.from_dict(PRESETS[choice])
                b = dict(spec.base)
                b.setdefault("data", {})
                b["data"] = {**b["data"], "tokens_per_domain": int(tokens)}
                b["train"] = {**b.get("train", {}), "epochs": float(epochs)}
                spec = spec.replace(base=b)
                sweep_id, runs = enqueue_sweep(data.lab(), spec)
                if backend == "ray":
                    started = ensure_ray_driver(data.lab(), address.strip() or None, int(threads))
                    what = f", a Ray driver started (its log in {data.lab().root / 'logs'})" if started else ""
                else:
                    started = ensure_workers(data.lab(), int(workers), int(threads) or None)
                    what = f", {started} worker(s) started" if started else ""
                if started:  # until the new worker registers itself, the queue must not say "no worker running"
                    st.session_state["_workers_started_at"] = time.monotonic()
                data.clear()
                st.session_state["sw_message"] = f"Sweep {sweep_id}: {len(runs)} jobs queued{what}"
            except LabError as e:
                st.session_state["sw_message"] = f"error: {e}"
        msg = st.session_state.get("sw_message")
        if msg:
            (st.error if msg.startswith("error") else st.success)(msg)


BACKENDS = {
    "local workers": "worker processes on this machine",
    "ray": "Ray tasks: on a Ray runtime this app starts on this machine, or on the Ray cluster at an address; "
           "a driver process writes their results here (see the README's Ray section)",
}
MIN_STEPS = 100  # below this the quality score warns "features of an SAE this young are mostly its initialisation"
WORKER_GRACE_SECONDS = 30.0  # a worker process just started takes this long, at most, to register


def training_steps(tokens_per_domain: int, epochs: float) -> int:
    """Training steps per SAE for a budget, with the experiment's default split and batch size."""
    # deferred: engine.config is only needed once the launcher is drawn
    from engine.config import ExperimentConfig

    cfg = ExperimentConfig()
    train_tokens = tokens_per_domain * (1.0 - cfg.data.val_fraction)
    return max(0, math.ceil(train_tokens * epochs / cfg.train.batch_size))


def _num(v) -> float | None:
    """A job-row number, or None for NULL (None, NaN or pandas NA)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _eta(seconds) -> str:
    seconds = _num(seconds)
    if seconds is None:
        return ""
    s = int(seconds)
    return f"ETA {s // 60}:{s % 60:02d}"


@st.fragment(run_every="2s")
def live_panel() -> None:
    # deferred: loads torch, which the app's pages start without
    from engine.sweeps.launch import ensure_workers, live_workers
    from engine.sweeps.queue import cancel_queued_and_flag_running

    st.markdown("**Queue**")
    if not data.lab_ready():
        st.caption("No lab database yet: launch a sweep or run `make lab`.")
        return
    try:
        jobs = data.jobs_live(data.lab())
    except LabError as e:
        st.caption(f"queue unavailable: {e}")
        return
    if jobs.empty:
        st.caption("No jobs yet.")
        return
    counts = jobs["shown_status"].value_counts().to_dict()
    st.caption(" · ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())))
    # When a job ends, refresh the whole page too (its tables and charts now have more runs).
    ended = int(sum(counts.get(k, 0) for k in ("FINISHED", "FAILED", "KILLED")))
    seen = st.session_state.get("_jobs_ended")
    st.session_state["_jobs_ended"] = ended
    if seen is not None and ended > seen:
        data.clear()
        st.rerun(scope="app")
    running = jobs[jobs["shown_status"] == "RUNNING"]
    # Jobs claimed together train in one pass over the same batches (engine.training.group).
    together = running["share_group"].value_counts().to_dict() if "share_group" in running else {}
    for r in running.itertuples():
        total, step = _num(r.total_steps), _num(r.step) or 0.0
        frac = min(1.0, step / total) if total else 0.0
        phase = r.phase if isinstance(r.phase, str) else "starting"
        st.progress(frac, text=f"{r.label} · {phase} {int(step)}/{int(total) if total else '?'} {_eta(r.eta_seconds)}")
        loss, fvu, dead = _num(r.loss), _num(r.fvu), _num(r.dead_frac)
        if fvu is not None:
            # The trainer counts a latent dead only after train.dead_after_tokens tokens without firing, so early
            # in training this reads 0 %; the run's held-out dead fraction is measured after training.
            others = together.get(getattr(r, "share_group", None), 1) - 1
            shared = f" · one pass with {others} other{'s' if others > 1 else ''}" if others > 0 else ""
            st.caption(f"loss {loss or 0:.4f} · FVU {fvu:.3f} (batch) · dead so far {dead or 0:.1%} (train){shared}")
        if st.button("Cancel", key=f"cancel_{r.job_id}", icon=":material/stop:"):
            cancel_queued_and_flag_running(data.lab(), job_ids=[r.job_id])
    queued = jobs[jobs["shown_status"] == "QUEUED"]
    interrupted = jobs[jobs["shown_status"] == "INTERRUPTED"]
    if len(queued) or len(interrupted):
        alive = live_workers(data.lab())
        started_at = st.session_state.get("_workers_started_at")
        starting = started_at is not None and time.monotonic() - started_at < WORKER_GRACE_SECONDS
        if not alive and starting:
            st.caption("Worker starting…")
        elif not alive:
            st.warning(f"{len(queued) + len(interrupted)} job(s) waiting and no worker running.")
            if st.button("Start a worker", key="start_worker", icon=":material/play_arrow:"):
                ensure_workers(data.lab(), 1)
        for r in queued.head(5).itertuples():
            st.caption(f"queued · {r.label}")
        if st.button(f"Cancel {len(queued)} queued", key="cancel_queued", icon=":material/clear_all:"):
            cancel_queued_and_flag_running(data.lab(), job_ids=list(queued["job_id"]))
    done = jobs[jobs["shown_status"].isin(["FINISHED", "FAILED", "KILLED"])].sort_values("finished_at", ascending=False)
    for r in done.head(3).itertuples():
        if r.shown_status == "FINISHED":  # its label in full (a link's label is cut at one line), then the link
            st.caption(f"✓ finished · {r.label}")
            st.page_link(data.page("runs"), label="its figures", query_params={"run": r.job_id},
                         icon=":material/open_in_new:", help="Open this run's figures on the Runs page")
        else:
            icon = {"FAILED": "✗", "KILLED": "■"}[r.shown_status]
            st.caption(f"{icon} {r.shown_status.lower()} · {r.label}" + (f" · {r.error}" if r.shown_status == "FAILED" else ""))


def render() -> None:
    with st.sidebar:
        st.caption(f"Lab: `{data.lab_path_label()}`")
        # The queue first: below an open launcher it was pushed under the fold right after Launch.
        live_panel()
        launcher()
        import_panel.panel()
