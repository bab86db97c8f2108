"""LLM-Seg's Gradio app: the demo, the leaderboard, submissions and the benchmark's documentation.

``python app.py [flags]`` serves it (``--help`` lists the flags and their environment variables);
``build_app(...)`` returns the ``gr.Blocks`` for embedding or tests. The model loads once, lazily,
and a model that cannot load only disables the Demo tab; a leaderboard that cannot open only
disables its two tabs.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from llmseg_app.about import render_about
from llmseg_app.compare_view import CompareView
from llmseg_app.demo import DemoTab
from llmseg_app.examples import load_examples
from llmseg_app.leaderboard_tab import LeaderboardTab
from llmseg_app.model_service import ModelService
from llmseg_app.settings import AppSettings, settings_from_args
from llmseg_app.submit import SubmitTab

if TYPE_CHECKING:
    from leaderboard import Leaderboard

logger = logging.getLogger("llmseg_app")

TITLE = "LLM-Seg: reasoning segmentation"
HEADER = (
    "# LLM-Seg: reasoning segmentation\n"
    "Ask for an object in words and get its mask: SAM-style proposals, a LLaVA-style model that reads "
    "the question, and a selection module that picks the proposals. Try the model, browse the leaderboard, "
    "submit predictions."
)
CSS = """
.gradio-container { max-width: min(1200px, 100vw) !important; margin: auto; }
.gradio-container pre { white-space: pre-wrap; overflow-wrap: anywhere; }
#model-banner { padding: 4px 12px; border-left: 4px solid var(--color-accent); }
#proposal-gallery .grid-wrap { min-height: 0 !important; max-height: none !important; height: auto !important; }
@media (max-width: 900px) { #proposal-gallery .grid-container { --grid-cols: 3 !important; } }
@media (max-width: 480px) { #proposal-gallery .grid-container { --grid-cols: 2 !important; } }
"""
MIN_UPLOAD_MB = 25  # demo images need some room even when the predictions limit is lower


def open_leaderboard(settings: AppSettings) -> tuple[Leaderboard | None, str | None]:
    """The leaderboard, or the reason it could not open (shown in its tabs instead of failing the app)."""
    try:
        from leaderboard import Leaderboard, LeaderboardSettings

        return Leaderboard(LeaderboardSettings.from_env(**settings.leaderboard_overrides)), None
    except Exception as error:  # the demo must keep working without a leaderboard
        logger.exception("leaderboard unavailable")
        return None, f"{type(error).__name__}: {error}"


def build_app(
    settings: AppSettings | None = None, *, service: ModelService | None = None, board: Leaderboard | None = None
) -> gr.Blocks:
    """Compose the four tabs. Opens the leaderboard unless given one and reads the examples; loads no model."""
    settings = settings or AppSettings.from_env()
    service = service or ModelService(settings.preset, settings.device)
    board_error = None
    if board is None:
        board, board_error = open_leaderboard(settings)
    split = board.benchmark().split if board is not None else "test"  # the public examples' split
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    examples = load_examples(settings.examples_data, settings.examples_split, settings.cache_dir, settings.num_examples)
    demo_tab = DemoTab(service, examples, settings.proposals_shown, concurrency_limit=settings.segment_concurrency)
    leaderboard_tab = submit_tab = compare_view = None
    if board is not None:
        leaderboard_tab = LeaderboardTab(board, cache_dir=settings.cache_dir)
        compare_view = CompareView(board, cache_dir=settings.cache_dir, require_login=settings.require_login)
        submit_tab = SubmitTab(
            board,
            require_login=settings.require_login,
            max_upload_mb=board.settings.max_upload_mb,
            concurrency_limit=settings.submit_concurrency,
        )

    with gr.Blocks(title=TITLE, delete_cache=(3600, 3600)) as blocks:
        gr.Markdown(HEADER)
        with gr.Tabs():
            with gr.Tab("Demo", id="demo"):
                demo_tab.render(blocks)
            with gr.Tab("Leaderboard", id="leaderboard"):
                if leaderboard_tab is None:
                    gr.Markdown(f"**The leaderboard could not be opened:** {board_error}")
                else:
                    table = leaderboard_tab.render(blocks)
                    if compare_view is not None:
                        compare_view.render(blocks, benchmark=leaderboard_tab.selector, table=table)
                    leaderboard_tab.render_reported()
            with gr.Tab("Submit", id="submit"):
                if submit_tab is None or leaderboard_tab is None:
                    gr.Markdown(f"**Submissions are closed: the leaderboard could not be opened:** {board_error}")
                else:
                    submit_tab.render().then(  # show the table of the benchmark just submitted to
                        leaderboard_tab.show,
                        inputs=[submit_tab.selector, *leaderboard_tab.inputs[1:]],
                        outputs=[leaderboard_tab.selector, *leaderboard_tab.outputs],
                        api_visibility="private",
                    )
            with gr.Tab("About", id="about"):
                render_about(settings.examples_data, split, settings.cache_dir)
    # Table refreshes and status checks are cheap: a few at once; the model and scoring set their own limits.
    blocks.queue(max_size=settings.queue_size, default_concurrency_limit=4)
    return blocks


def launch_options(settings: AppSettings) -> dict[str, Any]:
    """``launch()`` arguments: no benchmark's held-out data or baselines, nor the database, are servable as files."""
    from leaderboard import LeaderboardSettings

    blocked = []
    upload_mb: float = MIN_UPLOAD_MB
    try:
        board_settings = LeaderboardSettings.from_env(**settings.leaderboard_overrides)
    except ValueError:  # no leaderboard then (its tabs say why), so nothing of it to protect
        board_settings = None
    if board_settings is not None:
        blocked.append(str(board_settings.db_path.resolve().parent))
        try:
            benchmarks = board_settings.benchmarks()
        except ValueError:  # a bad benchmarks file: no leaderboard then, as above
            benchmarks = ()
        for benchmark in benchmarks:
            for folder in (Path(benchmark.data), benchmark.resolved_baselines_dir()):
                if folder is not None and folder.exists():
                    blocked.append(str(folder.resolve()))
        upload_mb = max(MIN_UPLOAD_MB, board_settings.max_upload_mb)
    return {
        "server_name": settings.server_name,
        "server_port": settings.server_port,
        "allowed_paths": [],
        "blocked_paths": blocked,
        "max_file_size": f"{upload_mb:g}mb",
        "ssr_mode": False,
        "css": CSS,
        "footer_links": ["api", "gradio"],
    }


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = settings_from_args(argv)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    service = ModelService(settings.preset, settings.device)
    blocks = build_app(settings, service=service)
    if settings.preload:
        service.preload_in_background()
    blocks.launch(**launch_options(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
