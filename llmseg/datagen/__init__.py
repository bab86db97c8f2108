"""Grow an LLM-Seg40K-style benchmark from instance annotations with an LLM.

Stages (each a sub-command of ``python -m llmseg.datagen``, each resumable and idempotent, all
sharing one work folder): ``select`` picks images and builds per-object masks, ``describe``
(optional) writes a scene description per image, ``ask`` has an LLM write reasoning questions
whose answers are listed objects, and ``write`` checks the answers and writes the common data
format.
"""
