"""Configuration of the sccl-hf text-to-text chat model.

This file travels with every saved model (``trust_remote_code=True``) and therefore imports only from
``transformers``. ``model_type`` stays ``"t5"`` so that checkpoints in the ChatLM-mini-Chinese layout, and
plain ``T5ForConditionalGeneration`` checkpoints, load with the same config.
"""

from transformers import T5Config


class TextToTextModelConfig(T5Config):
    """A ``T5Config`` whose special-token ids follow the sccl-hf / ChatLM-mini-Chinese convention.

    ``[PAD]`` is id 0 and also the decoder start token; ``[EOS]`` is id 1. T5 v1.0 defaults are kept
    (ReLU feed-forward, tied input/output embeddings), which is the ChatLM-mini-Chinese layout.

    Args:
        max_seq_len (`int`, defaults to 256): longest prompt or response, in tokens, that the model was
            trained on; generation and serving clamp to it.
        All other arguments are ``T5Config``'s.
    """

    model_type = "t5"

    def __init__(self, max_seq_len: int = 256, **kwargs):
        kwargs.setdefault("pad_token_id", 0)
        kwargs.setdefault("eos_token_id", 1)
        kwargs.setdefault("decoder_start_token_id", kwargs["pad_token_id"])
        self.max_seq_len = max_seq_len
        super().__init__(**kwargs)
