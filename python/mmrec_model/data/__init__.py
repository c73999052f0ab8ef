"""Training data: sources (files, datasets, checked records), batches (token streams, masks, micro-batches)
and a stage's data (training batches and held-out sets)."""
from .batches import (IGNORE, ExampleBatches, MicroBatch, TextBatches, encode_documents, eval_example_batches,
                      eval_text_batches, pad_examples, render_examples, targets_from_mask)
from .sources import (DATA_DIR, STAGE_KIND, STAGES, DataError, Problem, Source, default_specs, expand_specs,
                      load_sources, parse_chat, parse_instruct, stage_files, text_pieces, tokenizer_corpus)

__all__ = ["DATA_DIR", "STAGES", "STAGE_KIND", "DataError", "Problem", "Source", "load_sources", "default_specs",
           "expand_specs", "parse_instruct", "parse_chat", "encode_documents", "render_examples",
           "targets_from_mask", "TextBatches", "ExampleBatches", "MicroBatch", "pad_examples",
           "eval_text_batches", "eval_example_batches", "tokenizer_corpus", "stage_files", "text_pieces", "IGNORE"]
