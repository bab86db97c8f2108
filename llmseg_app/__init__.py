"""The Gradio app's parts, one module per tab plus its settings and model holder.

``app.py`` at the repository root composes them (``build_app``); nothing here runs at import.
"""
