"""The benchmark and quality harness: speed, memory, size and picture quality, measured the same way for every engine.

``run(**options)`` (CLI: ``atelier bench``) stylises every (content, style) pair at every size with every method,
plus the textbook Gatys baseline (``atelier.bench.baseline``) on the first pair(s) at each size, and writes into ``out``:

* ``records.jsonl``  one scored record per method x pair x size, appended as each is finished (the source of truth);
                     its ``quality``: ``style_gram``, ``style_meanstd``, ``content_unit`` under the judge network
                     (``--judge``, default EfficientNet-Lite2 ImageNet, at its ``JUDGE_LEVELS``; ``atelier.metrics``),
                     ``ssim`` and ``colour_hellinger``; its ``judge``: the judge's identity;
* ``results.json``   the records, a summary per method x size, the pairs with their sha256, the machine facts;
* ``results.md``     the same as tables, with the command, the machine and the judge (identity, levels) above them;
* ``contact_sheet_<size>.png``  rows = contents, columns = style x method, the content first, style thumbnails on top;
* ``convergence.png``  objective against loss evaluations and against seconds (first pair, every size);
* ``images/<method>/<size>/<content sha>_<style sha>.png``  the outputs (8-bit PNG); quality is measured on these
  files as re-read from disk, not on the float tensors the engine returned;
* ``run.json`` (the arguments' signature, pairs, every invocation's command and machine) and ``work/raw.jsonl``
  (timed results not yet scored), which make resuming possible. The preprocessed inputs live in a temporary folder
  only while the run lasts, so a results folder carries no copy of the photographs' pixels beyond the contact sheet.

What is where (each module imports only those above it):

* ``judges``    the judges' levels ``JUDGE_LEVELS`` and the results format (``BenchOptions`` is in
                ``atelier.options``);
* ``files``     sha256 of inputs, crash-safe JSON lines, atomic JSON;
* ``measure``   ``MacCounter``, machine facts and matmul peak, resident/high-water memory, device sync;
* ``inputs``    methods (names or model folders), the judge, the pairs (``auto`` or a file), ``prepare`` -> ``Plan``;
* ``pictures``  contact sheets and the convergence plot;
* ``report``    the summary, results.json / results.md (``load_results``, ``write_reports``);
* ``jobs``      ``run_job`` and its worker process; the engine contract and how memory is measured;
* ``runner``    ``run``: the jobs, scoring, resume.
"""

from .inputs import auto_pairs, load_judge, read_pairs_file, resolve_method
from .jobs import run_job
from .measure import MacCounter, machine_facts, matmul_peak_gflops
from ..options.bench import BASELINE, JUDGE_SEED, BenchOptions
from .judges import JUDGE_LEVELS
from .pictures import contact_sheet, convergence_plot
from .report import load_results, render_markdown, write_reports
from .runner import run

__all__ = ["BenchOptions", "run", "write_reports", "load_results", "render_markdown", "contact_sheet",
           "convergence_plot", "MacCounter", "machine_facts", "matmul_peak_gflops", "load_judge",
           "resolve_method", "auto_pairs", "read_pairs_file", "run_job", "BASELINE", "JUDGE_LEVELS", "JUDGE_SEED"]
