"""Chart builders (altair for 2D, plotly for 3D and parallel coordinates). Pure functions of data."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go


def step_curves(df: pd.DataFrame, label: dict[str, str]) -> alt.Chart:
    d = df.assign(run=df["run_id"].map(lambda r: label.get(r, r)))
    return (
        alt.Chart(d).mark_line().encode(
            x=alt.X("step:Q", title="step"), y=alt.Y("value:Q", title=None),
            color=alt.Color("run:N", legend=alt.Legend(orient="bottom", columns=2, labelLimit=300)),
            tooltip=["run", "step", "tokens", alt.Tooltip("value:Q", format=".4f")],
        ).properties(height=220).facet(facet=alt.Facet("name:N", title=None), columns=3).resolve_scale(y="independent")
    )


def metric_over_time(df: pd.DataFrame, metric: str) -> alt.Chart:
    d = df.dropna(subset=[metric])
    # Runs of one experiment finish within seconds: without padding the axis zooms to milliseconds
    # and labels read ".900". Keep at least ten minutes in view, labelled as clock times.
    times = pd.to_datetime(d["ended_at"]).dropna()
    scale = alt.Scale()
    if len(times) and times.max() - times.min() < pd.Timedelta(minutes=10):
        mid = times.min() + (times.max() - times.min()) / 2
        scale = alt.Scale(domain=[(mid - pd.Timedelta(minutes=5)).isoformat(), (mid + pd.Timedelta(minutes=5)).isoformat()])
    return (
        alt.Chart(d).mark_point(filled=True, size=70).encode(  # a point mark, so shape shows the training domain
            x=alt.X("ended_at:T", title="finished", scale=scale, axis=alt.Axis(format="%b %d %H:%M", labelOverlap=True)),
            y=alt.Y(f"{metric}:Q", scale=alt.Scale(zero=False)),
            color=alt.Color("layer:O"), shape="train_domain:N",
            tooltip=["run_id", alt.Tooltip("ended_at:T", title="finished", format="%Y-%m-%d %H:%M:%S"), "layer", "k", "d_sae",
                     "train_domain", alt.Tooltip(f"{metric}:Q", format=".4f")],
        ).properties(height=260)
    )


def transfer_heatmap(df: pd.DataFrame, value: str = "mse") -> alt.Chart:
    base = alt.Chart(df).encode(x=alt.X("eval_domain:N", title="evaluated on"), y=alt.Y("train_domain:N", title="trained on"))
    return (base.mark_rect().encode(color=alt.Color(f"{value}:Q", scale=alt.Scale(scheme="oranges")),
                                    tooltip=["train_domain", "eval_domain", alt.Tooltip(f"{value}:Q", format=".4f"),
                                             alt.Tooltip("transfer_ratio:Q", format=".2f")])
            + base.mark_text(baseline="middle").encode(text=alt.Text(f"{value}:Q", format=".4f"))).properties(height=200)


def transfer_bars(df: pd.DataFrame) -> alt.Chart:
    d = df.assign(pair=df["train_domain"] + " → " + df["eval_domain"])
    return alt.Chart(d).mark_bar().encode(
        x=alt.X("pair:N", title=None, sort=None), y=alt.Y("mse:Q", title="held-out MSE"),
        color=alt.condition(alt.datum.train_domain == alt.datum.eval_domain, alt.value("#4c78a8"), alt.value("#f58518")),
        tooltip=["pair", alt.Tooltip("mse:Q", format=".4f"), alt.Tooltip("transfer_ratio:Q", format=".2f")],
    ).properties(height=220)


def histogram_bars(edges: list[float], counts: list[float], title: str) -> alt.Chart:
    e = np.asarray(edges, dtype=float)
    d = pd.DataFrame({"lo": e[:-1], "hi": e[1:], "count": np.asarray(counts, dtype=float)})
    return alt.Chart(d).mark_bar().encode(
        x=alt.X("lo:Q", bin="binned", title=title), x2="hi:Q", y=alt.Y("count:Q", title="tokens"),
        tooltip=[alt.Tooltip("lo:Q", format=".3f"), alt.Tooltip("hi:Q", format=".3f"), "count:Q"],
    ).properties(height=180)


def domain_histograms(edges: list[float], counts: dict[str, list[float]]) -> alt.Chart:
    e = np.asarray(edges, dtype=float)
    d = pd.concat([pd.DataFrame({"domain": k, "lo": e[:-1], "hi": e[1:],
                                 "count": np.asarray(v, dtype=float)}) for k, v in counts.items()])
    return alt.Chart(d).mark_bar(opacity=0.6).encode(
        x=alt.X("lo:Q", bin="binned", title="activation"), x2="hi:Q", y=alt.Y("count:Q", title="tokens", stack=None),
        color="domain:N", tooltip=["domain", alt.Tooltip("lo:Q", format=".3f"), alt.Tooltip("hi:Q", format=".3f"), "count:Q"],
    ).properties(height=200)


def freq_vs_magnitude(df: pd.DataFrame) -> alt.Chart:
    return alt.Chart(df).mark_circle(size=18, opacity=0.6).encode(
        x=alt.X("frequency:Q", scale=alt.Scale(type="log"), title="firing frequency (log)"),
        y=alt.Y("mean_act:Q", title="mean activation when firing"), color=alt.Color("feature_class:N", title="class"),
        tooltip=["feature", "label", alt.Tooltip("frequency:Q", format=".5f"), alt.Tooltip("mean_act:Q", format=".3f")],
    ).properties(height=280)


def token_effects(df: pd.DataFrame) -> alt.Chart:
    return alt.Chart(df).mark_bar().encode(
        x=alt.X("score:Q", title="push"), y=alt.Y("token:N", sort="-x", title=None),
        color=alt.condition(alt.datum.score > 0, alt.value("#54a24b"), alt.value("#e45756")),
        tooltip=["token", alt.Tooltip("score:Q", format=".3f")],
    ).properties(height=max(120, 16 * len(df)))


def pareto(df: pd.DataFrame, front: pd.DataFrame, by: str = "layer", by_concepts: bool = False) -> alt.Chart:
    """FVU vs L0 with one dashed front per ``by`` (layer, or architecture when a sweep compares architectures).

    Points are coloured like their front, or by ground-truth concept coverage when ``by_concepts``;
    the marker's shape is the architecture."""
    kind = "N" if by == "architecture" else "O"
    colour = (alt.Color("concept_coverage:Q", title="concept coverage", scale=alt.Scale(scheme="viridis", domain=[0, 1]))
              if by_concepts and "concept_coverage" in df.columns else alt.Color(f"{by}:{kind}"))
    tips = ["architecture", "layer", "k", "d_sae", alt.Tooltip("fvu:Q", format=".4f"), alt.Tooltip("l0:Q", format=".1f")]
    if "concept_coverage" in df.columns:
        tips += [alt.Tooltip("concept_coverage:Q", format=".2f"), alt.Tooltip("probe_k1:Q", format=".3f")]
    pts = alt.Chart(df).mark_point(size=80, filled=True).encode(
        x=alt.X("l0:Q", title="L0"), y=alt.Y("fvu:Q", title="FVU (held-out, in-domain)"), color=colour,
        shape=alt.Shape("architecture:N"), tooltip=tips,
    )
    line = alt.Chart(front).mark_line(strokeDash=[4, 3]).encode(x="l0:Q", y="fvu:Q", color=f"{by}:{kind}")
    return (pts + line).resolve_scale(color="independent").properties(height=300)


def parallel_coordinates(df: pd.DataFrame, cols: list[str], color: str) -> go.Figure:
    fig = px.parallel_coordinates(df, dimensions=cols, color=color, color_continuous_scale=px.colors.sequential.Viridis)
    fig.update_layout(height=360, margin=dict(l=40, r=40, t=40, b=20))
    return fig


def concept_map(df: pd.DataFrame, dims: int, color: str, selected: int | None = None) -> go.Figure:
    hover = {"feature": True, "title" if "title" in df.columns else "label": True, "cluster": True, "feature_class": True}
    if dims == 3:
        fig = px.scatter_3d(df, x="x3", y="y3", z="z3", color=color, hover_data=hover, custom_data=["feature"], opacity=0.8)
        fig.update_traces(marker=dict(size=3))
    else:
        # SVG draws a few thousand points faster than WebGL starts up (and a browser without a GPU
        # runs WebGL in software); WebGL only pays off for the large dictionaries.
        mode = "svg" if len(df) <= 5000 else "webgl"
        fig = px.scatter(df, x="x2", y="y2", color=color, hover_data=hover, custom_data=["feature"],
                         opacity=0.8, render_mode=mode)
        fig.update_traces(marker=dict(size=6))
        if selected is not None and (df["feature"] == selected).any():
            row = df[df["feature"] == selected].iloc[0]
            fig.add_trace(go.Scatter(x=[row["x2"]], y=[row["y2"]], mode="markers",
                                     marker=dict(size=16, symbol="circle-open", color="black"),
                                     name=f"feature {selected}", hoverinfo="skip"))
    fig.update_layout(height=560, margin=dict(l=0, r=0, t=10, b=0), legend=dict(orientation="h"))
    return fig
