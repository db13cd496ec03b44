"""Chart builders (altair for 2D, plotly for 3D and parallel coordinates). Pure functions of data."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

# Vega's default categorical palette (tableau10): the run colours are fixed here, so every small
# multiple and the shared legend under them agree.
PALETTE = ["#4c78a8", "#f58518", "#e45756", "#72b7b2", "#54a24b", "#eeca3b", "#b279a2", "#ff9da6", "#9d755d", "#bab0ac"]


def run_colours(labels: list[str]) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(labels)}


def step_curve(df: pd.DataFrame, metric: str, colours: dict[str, str], title: str | None = None) -> alt.Chart:
    """One metric over training steps, one line per run (a point per logged step, so a one-step run
    still shows its single value). No legend: the page draws one legend for all the small multiples."""
    d = df[df["name"] == metric]
    names = list(colours)
    return alt.Chart(d).mark_line(point=alt.OverlayMarkDef(size=30)).encode(
        x=alt.X("step:Q", title="step", axis=alt.Axis(format="~s", tickMinStep=1)),
        y=alt.Y("value:Q", title=title or metric, scale=alt.Scale(zero=False), axis=alt.Axis(format="~g")),
        color=alt.Color("run:N", scale=alt.Scale(domain=names, range=[colours[n] for n in names]), legend=None),
        tooltip=["run", "step", "tokens", alt.Tooltip("value:Q", title=title or metric, format=".4f")],
    ).properties(height=200)


def step_curves(df: pd.DataFrame, label: dict[str, str]) -> alt.Chart:
    """Every metric of ``df`` faceted in one chart (kept for callers outside the app's pages)."""
    d = df.assign(run=df["run_id"].map(lambda r: label.get(r, r)))
    return (
        alt.Chart(d).mark_line(point=True).encode(
            x=alt.X("step:Q", title="step"), y=alt.Y("value:Q", title=None),
            color=alt.Color("run:N", legend=alt.Legend(orient="bottom", columns=2, labelLimit=0)),
            tooltip=["run", "step", "tokens", alt.Tooltip("value:Q", format=".4f")],
        ).properties(height=220, width=220).facet(facet=alt.Facet("name:N", title=None), columns=3)
        .resolve_scale(y="independent")
    )


def metric_over_time(df: pd.DataFrame, metric: str, title: str | None = None) -> alt.Chart:
    d = df.dropna(subset=[metric]).assign(config=lambda x: "L" + x["layer"].astype(str) + " k=" + x["k"].astype(str))
    if "trained_on" not in d:  # an imported SAE reads "imported (format)", not its reference domain
        d = d.assign(trained_on=d["train_domain"])
    # Runs of one experiment finish within seconds: without padding the axis zooms to milliseconds
    # and labels read ".900". Keep at least ten minutes in view, labelled as clock times.
    times = pd.to_datetime(d["ended_at"]).dropna()
    scale = alt.Scale()
    if len(times) and times.max() - times.min() < pd.Timedelta(minutes=10):
        mid = times.min() + (times.max() - times.min()) / 2
        scale = alt.Scale(domain=[(mid - pd.Timedelta(minutes=5)).isoformat(), (mid + pd.Timedelta(minutes=5)).isoformat()])
    name = title or metric
    # Colour = layer and k together (k = 8 and k = 16 of one layer look different); shape = training domain.
    points = alt.Chart(d).mark_point(filled=True, size=70).encode(
        x=alt.X("ended_at:T", title="finished", scale=scale, axis=alt.Axis(format="%b %d %H:%M", labelOverlap=True)),
        y=alt.Y(f"{metric}:Q", title=name, scale=alt.Scale(zero=False)),
        color=alt.Color("config:N", title="layer, k", scale=alt.Scale(scheme="tableau10")),
        shape=alt.Shape("trained_on:N", title="trained on"),
        tooltip=["run_id", alt.Tooltip("ended_at:T", title="finished", format="%Y-%m-%d %H:%M:%S"), "layer", "k", "d_sae",
                 alt.Tooltip("trained_on", title="trained on"), alt.Tooltip(f"{metric}:Q", title=name, format=".4f")],
    )
    if metric != "transfer_ratio":
        return points.properties(height=260)
    # transfer = 1 means no loss on the other domains: the line every point is read against.
    rule = alt.Chart(pd.DataFrame({"y": [1.0]})).mark_rule(strokeDash=[4, 3], color="#888").encode(y="y:Q")
    return (points + rule).properties(height=260)


def transfer_heatmap(df: pd.DataFrame, value: str = "mse", y_title: str = "trained on") -> alt.Chart:
    """Rows: the domain each SAE was trained on (for an imported SAE, the reference domain its transfer
    ratios are relative to: ``y_title`` says which)."""
    base = alt.Chart(df).encode(x=alt.X("eval_domain:N", title="evaluated on"), y=alt.Y("train_domain:N", title=y_title))
    return (base.mark_rect().encode(color=alt.Color(f"{value}:Q", scale=alt.Scale(scheme="oranges")),
                                    tooltip=[alt.Tooltip("train_domain", title=y_title), "eval_domain",
                                             alt.Tooltip(f"{value}:Q", format=".4f"),
                                             alt.Tooltip("transfer_ratio:Q", format=".2f")])
            + base.mark_text(baseline="middle").encode(text=alt.Text(f"{value}:Q", format=".4f"))).properties(height=200)


def transfer_bars(df: pd.DataFrame) -> alt.Chart:
    d = df.assign(pair=df["train_domain"] + " → " + df["eval_domain"])
    return alt.Chart(d).mark_bar().encode(
        x=alt.X("pair:N", title=None, sort=None), y=alt.Y("mse:Q", title="held-out MSE"),
        color=alt.condition(alt.datum.train_domain == alt.datum.eval_domain, alt.value("#4c78a8"), alt.value("#f58518")),
        tooltip=["pair", alt.Tooltip("mse:Q", format=".4f"), alt.Tooltip("transfer_ratio:Q", format=".2f")],
    ).properties(height=220)


def histogram_bars(edges: list[float], counts: list[float], title: str, y_title: str = "tokens") -> alt.Chart:
    e = np.asarray(edges, dtype=float)
    d = pd.DataFrame({"lo": e[:-1], "hi": e[1:], "count": np.asarray(counts, dtype=float)})
    return alt.Chart(d).mark_bar().encode(
        x=alt.X("lo:Q", bin="binned", title=title), x2="hi:Q", y=alt.Y("count:Q", title=y_title),
        tooltip=[alt.Tooltip("lo:Q", format=".3f"), alt.Tooltip("hi:Q", format=".3f"), "count:Q"],
    ).properties(height=180)


def domain_histograms(edges: list[float], counts: dict[str, list[float]]) -> alt.Chart:
    e = np.asarray(edges, dtype=float)
    d = pd.concat([pd.DataFrame({"domain": k, "lo": e[:-1], "hi": e[1:],
                                 "count": np.asarray(v, dtype=float)}) for k, v in counts.items()])
    return alt.Chart(d).mark_bar(opacity=0.6).encode(
        x=alt.X("lo:Q", bin="binned", title="activation"), x2="hi:Q", y=alt.Y("count:Q", title="tokens", stack=None),
        # Vega's blue and orange: Streamlit's own categorical palette starts with two blues that read as one.
        color=alt.Color("domain:N", scale=alt.Scale(scheme="tableau10")),
        tooltip=["domain", alt.Tooltip("lo:Q", format=".3f"), alt.Tooltip("hi:Q", format=".3f"), "count:Q"],
    ).properties(height=200)


def freq_vs_magnitude(df: pd.DataFrame) -> alt.Chart:
    return alt.Chart(df).mark_circle(size=18, opacity=0.6).encode(
        x=alt.X("frequency:Q", scale=alt.Scale(type="log"), title="firing frequency (log)"),
        y=alt.Y("mean_act:Q", title="mean activation when firing"),
        color=alt.Color("feature_class:N", title="class", scale=alt.Scale(scheme="tableau10")),
        tooltip=["feature", "label", alt.Tooltip("frequency:Q", format=".5f"), alt.Tooltip("mean_act:Q", format=".3f")],
    ).properties(height=280)


def token_effects(df: pd.DataFrame) -> alt.Chart:
    return alt.Chart(df).mark_bar().encode(
        # Every bar labelled: 20 px a bar, and no label hidden for overlapping its neighbour.
        x=alt.X("score:Q", title="push"), y=alt.Y("token:N", sort="-x", title=None, axis=alt.Axis(labelOverlap=False)),
        color=alt.condition(alt.datum.score > 0, alt.value("#54a24b"), alt.value("#e45756")),
        tooltip=["token", alt.Tooltip("score:Q", format=".3f")],
    ).properties(height=max(120, 20 * len(df)))


def pareto(df: pd.DataFrame, front: pd.DataFrame, by: str = "layer", by_concepts: bool = False) -> alt.Chart:
    """FVU vs L0 with one dashed front per ``by`` (layer, or architecture when a sweep compares architectures).

    Points are coloured like their front, or by ground-truth concept coverage when ``by_concepts``;
    the marker's shape is the architecture."""
    kind = "N" if by == "architecture" else "O"
    groups = alt.Color(f"{by}:{kind}", scale=alt.Scale(scheme="tableau10"))
    colour = (alt.Color("concept_coverage:Q", title="concept coverage", scale=alt.Scale(scheme="viridis", domain=[0, 1]))
              if by_concepts and "concept_coverage" in df.columns else groups)
    tips = ["architecture", "layer", "k", "d_sae", alt.Tooltip("fvu:Q", format=".4f"), alt.Tooltip("l0:Q", format=".1f")]
    if "concept_coverage" in df.columns:
        tips += [alt.Tooltip("concept_coverage:Q", format=".2f"), alt.Tooltip("probe_k1:Q", format=".3f")]
    pts = alt.Chart(df).mark_point(size=80, filled=True).encode(
        # Not from 0: the configurations sit in a narrow band of both, which a zero-based axis squeezes into a corner.
        # ~ trims trailing zeros: one configuration (a single tick) read "4.000000" and "0.966020".
        x=alt.X("l0:Q", title="L0", scale=alt.Scale(zero=False, padding=20), axis=alt.Axis(format="~g")),
        y=alt.Y("fvu:Q", title="FVU (held-out, in-domain)", scale=alt.Scale(zero=False, padding=20),
                axis=alt.Axis(format=".3~f")), color=colour,
        shape=alt.Shape("architecture:N"), tooltip=tips,
    )
    line = alt.Chart(front).mark_line(strokeDash=[4, 3]).encode(
        x="l0:Q", y="fvu:Q", color=alt.Color(f"{by}:{kind}", scale=alt.Scale(scheme="tableau10"), legend=None))
    return (pts + line).resolve_scale(color="independent").properties(height=300)


def parallel_coordinates(df: pd.DataFrame, cols: list[str], color: str, labels: dict[str, str] | None = None) -> go.Figure:
    fig = px.parallel_coordinates(df, dimensions=cols, color=color, color_continuous_scale=px.colors.sequential.Viridis,
                                  labels=labels or {})
    fig.update_layout(height=360, margin=dict(l=40, r=40, t=40, b=20))
    # Ticks and the range labels at each axis's ends with 4 significant digits, not "0.9737957".
    fig.update_traces(dimensions=[{**d.to_plotly_json(), "tickformat": ".4~g"} for d in fig.data[0].dimensions])
    fig.update_coloraxes(colorbar_tickformat=".4~g")
    return fig


MAP_AXES = {"x2": "map x (PCA 1)", "y2": "map y (PCA 2)", "x3": "PCA 1", "y3": "PCA 2", "z3": "PCA 3"}


def concept_map(df: pd.DataFrame, dims: int, color: str, selected: int | None = None) -> go.Figure:
    """Every live feature as a point; hovering names it (label, frequency, cluster, class), not its coordinates."""
    title = "title" if "title" in df.columns else "label"
    df = df.assign(_label=df[title].fillna("—").astype(str).str.slice(0, 80), _freq=df["freq"].map(lambda f: f"{f:.3%}"))
    custom = ["feature", "_label", "_freq", "cluster", "feature_class"]
    hover = ("<b>feature %{customdata[0]}</b><br>%{customdata[1]}<br>fires on %{customdata[2]} of tokens"
             "<br>cluster %{customdata[3]} · %{customdata[4]}<extra></extra>")
    # Clusters in number order in the legend (they are strings, so plotly would list them as first seen).
    orders = {"cluster": sorted(df["cluster"].unique(), key=lambda c: int(c) if str(c).isdigit() else 1_000_000)} \
        if "cluster" in df.columns else {}
    if dims == 3:
        fig = px.scatter_3d(df, x="x3", y="y3", z="z3", color=color, custom_data=custom, opacity=0.8, category_orders=orders,
                            labels=MAP_AXES, color_discrete_sequence=px.colors.qualitative.T10)
        fig.update_traces(marker=dict(size=3), hovertemplate=hover)
    else:
        # SVG draws a few thousand points faster than WebGL starts up (and a browser without a GPU
        # runs WebGL in software); WebGL only pays off for the large dictionaries.
        mode = "svg" if len(df) <= 5000 else "webgl"
        fig = px.scatter(df, x="x2", y="y2", color=color, custom_data=custom, opacity=0.8, render_mode=mode,
                         category_orders=orders, labels=MAP_AXES,
                         # Tableau's ten: Streamlit's own palette starts with two blues that read as one cluster.
                         color_discrete_sequence=px.colors.qualitative.T10)
        fig.update_traces(marker=dict(size=6), hovertemplate=hover)
        if selected is not None and (df["feature"] == selected).any():
            row = df[df["feature"] == selected].iloc[0]
            fig.add_trace(go.Scatter(x=[row["x2"]], y=[row["y2"]], mode="markers",
                                     marker=dict(size=16, symbol="circle-open", color="black"),
                                     name=f"feature {selected}", hoverinfo="skip"))
    fig.update_layout(height=520, margin=dict(l=0, r=0, t=10, b=0), legend=dict(orientation="h", title_text=color))
    return fig
