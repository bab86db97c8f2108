"""Convert the authors' released LLM-Seg DeepSpeed checkpoint into a folder ``LLMSeg.from_pretrained`` loads.

The release (``JCdesu/LLM-Seg-deepspeed`` and its siblings on the Hub) is a DeepSpeed training
state: ``ckpt_model/global_step<N>/mp_rank_00_model_states.pt``, one 31 GB pickle whose
``"module"`` entry holds every weight in bf16 with the LoRA factors unmerged. Every key of it is
mapped (layout in ``official-checkpoint.md``), deliberately dropped with a reason, or rejected
by name. The output folder, in ``llmseg.model.checkpoint``'s layout:

    config.json                  LLMSegConfig with the release's choices (absolute paths to the parts)
    llava/                       LlavaForConditionalGeneration (LoRA merged): the weight files save_pretrained
                                 would write, byte for byte, with its processor and tokenizer
    dinov2/                      Dinov2Model with the release's 64x64 position grid baked in (likewise)
    region_encoder.safetensors   the 1x1 conv (``lisa_dino_conv``)
    selector.safetensors         the selection module (``text_hidden_fcs`` and ``lisa_*``)
    adapter/                     the peft adapter LLMSeg expects on top of llava/: just the [SEG] rows
    conversion_report.json       where every source key went, or why it was dropped

The file is read memory-mapped and the output written tensor by tensor, each tensor's source
pages released once it is on disk, so conversion needs far less RAM than the file's size.

One module per stage: ``locate`` (file, folder or Hub download), ``load`` (memory-mapped read),
``plan`` (the key mapping), ``configs`` (sizes, configs, processor), ``targets`` (the meta-device
models the plan is checked against), ``write`` (safetensors and shards), ``convert`` (the whole
run and its report) and ``command`` (the ``convert-official`` sub-command).
"""

from llmseg.model.convert_official.command import register
from llmseg.model.convert_official.configs import (
    ReleaseArchitecture,
    build_processor,
    dinov2_config,
    llava_config,
    official_config,
)
from llmseg.model.convert_official.convert import DTYPES, REPORT_FILE, conversion_report, convert_official
from llmseg.model.convert_official.load import MappedFile, load_model_states
from llmseg.model.convert_official.locate import MODEL_STATES_FILE, SourceCheckpoint, locate_checkpoint
from llmseg.model.convert_official.plan import ConversionPlan, Output, plan_conversion
from llmseg.model.convert_official.targets import adapter_outputs, check_part, saved_names
from llmseg.model.convert_official.write import write_safetensors, write_shards

__all__ = [
    "DTYPES",
    "MODEL_STATES_FILE",
    "REPORT_FILE",
    "ConversionPlan",
    "MappedFile",
    "Output",
    "ReleaseArchitecture",
    "SourceCheckpoint",
    "adapter_outputs",
    "build_processor",
    "check_part",
    "conversion_report",
    "convert_official",
    "dinov2_config",
    "llava_config",
    "load_model_states",
    "locate_checkpoint",
    "official_config",
    "plan_conversion",
    "register",
    "saved_names",
    "write_safetensors",
    "write_shards",
]
