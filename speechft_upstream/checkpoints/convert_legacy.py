"""Files from before fairseq's hydra configs ({'args': argparse.Namespace, 'model': ...}).

fairseq turns ``args`` into a config (convert_namespace_to_omegaconf): the model's and the task's
dataclass defaults, overridden by the attributes ``args`` has (with _override_attr's coercions).
The defaults below are what fairseq 0.12.2 gives for a Namespace with only arch/task/data,
interpolations resolved as it resolves them (tests/test_fairseq.py compares with fairseq).
"""

import argparse
import ast
import copy

from speechft_upstream.errors import SpeechFTError

FAIRSEQ_0_12_2_DEFAULTS = {'wav2vec2': {'model': {'_name': 'wav2vec2',
                        'extractor_mode': 'default',
                        'encoder_layers': 12,
                        'encoder_embed_dim': 768,
                        'encoder_ffn_embed_dim': 3072,
                        'encoder_attention_heads': 12,
                        'activation_fn': 'gelu',
                        'layer_type': 'transformer',
                        'dropout': 0.1,
                        'attention_dropout': 0.1,
                        'activation_dropout': 0.0,
                        'encoder_layerdrop': 0.0,
                        'dropout_input': 0.0,
                        'dropout_features': 0.0,
                        'final_dim': 0,
                        'layer_norm_first': False,
                        'conv_feature_layers': '[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + '
                                               '[(512,2,2)]',
                        'conv_bias': False,
                        'logit_temp': 0.1,
                        'quantize_targets': False,
                        'quantize_input': False,
                        'same_quantizer': False,
                        'target_glu': False,
                        'feature_grad_mult': 1.0,
                        'quantizer_depth': 1,
                        'quantizer_factor': 3,
                        'latent_vars': 320,
                        'latent_groups': 2,
                        'latent_dim': 0,
                        'mask_length': 10,
                        'mask_prob': 0.65,
                        'mask_selection': 'static',
                        'mask_other': 0.0,
                        'no_mask_overlap': False,
                        'mask_min_space': 1,
                        'require_same_masks': True,
                        'mask_dropout': 0.0,
                        'mask_channel_length': 10,
                        'mask_channel_prob': 0.0,
                        'mask_channel_before': False,
                        'mask_channel_selection': 'static',
                        'mask_channel_other': 0.0,
                        'no_mask_channel_overlap': False,
                        'mask_channel_min_space': 1,
                        'num_negatives': 100,
                        'negatives_from_everywhere': False,
                        'cross_sample_negatives': 0,
                        'codebook_negatives': 0,
                        'conv_pos': 128,
                        'conv_pos_groups': 16,
                        'pos_conv_depth': 1,
                        'latent_temp': [2.0, 0.5, 0.999995],
                        'max_positions': 100000,
                        'checkpoint_activations': False,
                        'required_seq_len_multiple': 2,
                        'crop_seq_to_multiple': 1,
                        'depthwise_conv_kernel_size': 31,
                        'attn_type': '',
                        'pos_enc_type': 'abs',
                        'fp16': False},
              'task': {'_name': 'audio_pretraining',
                       'data': '',
                       'labels': None,
                       'binarized_dataset': False,
                       'sample_rate': 16000,
                       'normalize': False,
                       'enable_padding': False,
                       'max_sample_size': None,
                       'min_sample_size': None,
                       'num_batch_buckets': 0,
                       'precompute_mask_indices': False,
                       'inferred_w2v_config': None,
                       'tpu': True,
                       'text_compression_level': 'none'}},
 'hubert': {'model': {'_name': 'hubert',
                      'label_rate': -1.0,
                      'extractor_mode': 'default',
                      'encoder_layers': 12,
                      'encoder_embed_dim': 768,
                      'encoder_ffn_embed_dim': 3072,
                      'encoder_attention_heads': 12,
                      'activation_fn': 'gelu',
                      'layer_type': 'transformer',
                      'dropout': 0.1,
                      'attention_dropout': 0.1,
                      'activation_dropout': 0.0,
                      'encoder_layerdrop': 0.0,
                      'dropout_input': 0.0,
                      'dropout_features': 0.0,
                      'final_dim': 0,
                      'untie_final_proj': False,
                      'layer_norm_first': False,
                      'conv_feature_layers': '[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2',
                      'conv_bias': False,
                      'logit_temp': 0.1,
                      'target_glu': False,
                      'feature_grad_mult': 1.0,
                      'mask_length': 10,
                      'mask_prob': 0.65,
                      'mask_selection': 'static',
                      'mask_other': 0.0,
                      'no_mask_overlap': False,
                      'mask_min_space': 1,
                      'mask_channel_length': 10,
                      'mask_channel_prob': 0.0,
                      'mask_channel_selection': 'static',
                      'mask_channel_other': 0.0,
                      'no_mask_channel_overlap': False,
                      'mask_channel_min_space': 1,
                      'conv_pos': 128,
                      'conv_pos_groups': 16,
                      'latent_temp': [2.0, 0.5, 0.999995],
                      'skip_masked': False,
                      'skip_nomask': False,
                      'checkpoint_activations': False,
                      'required_seq_len_multiple': 2,
                      'depthwise_conv_kernel_size': 31,
                      'attn_type': '',
                      'pos_enc_type': 'abs',
                      'fp16': False},
            'task': {'_name': 'hubert_pretraining',
                     'data': '',
                     'fine_tuning': False,
                     'labels': ['ltr'],
                     'label_dir': None,
                     'label_rate': -1.0,
                     'sample_rate': 16000,
                     'normalize': False,
                     'enable_padding': False,
                     'max_keep_size': None,
                     'max_sample_size': None,
                     'min_sample_size': None,
                     'single_target': False,
                     'random_crop': True,
                     'pad_audio': False}}}

_TASKS = {"wav2vec2": "audio_pretraining", "hubert": "hubert_pretraining"}


def _override(defaults, args):
    out = {}
    for key, default in defaults.items():
        if key == "_name" or not hasattr(args, key):
            out[key] = copy.deepcopy(default)
            continue
        value = getattr(args, key)
        if isinstance(value, str) and not value.startswith("${") and default is not None \
                and not isinstance(default, str):
            try:
                value = ast.literal_eval(value)  # old files stored complex values as strings
            except (ValueError, SyntaxError):
                pass
        if isinstance(value, tuple):
            value = list(value)
        if value is not None and isinstance(default, (bool, int, float)):
            try:
                value = type(default)(value)
            except (TypeError, ValueError):
                pass
        elif isinstance(default, list) and isinstance(value, list) and default \
                and all(type(x) is float for x in default):
            value = [float(x) for x in value]
        out[key] = value
    return out


def cfg_from_args(args, family, path):
    """The task and model sections fairseq 0.12.2 derives from an old file's Namespace."""
    args = argparse.Namespace(**vars(args))
    if getattr(args, "task", None) == "speech_pretraining":  # fairseq's _upgrade_state_dict
        args.task = "audio_pretraining"
    if isinstance(getattr(args, "data", None), list) and args.data:
        args.data = args.data[0]
    if getattr(args, "task", None) != _TASKS[family]:
        raise SpeechFTError(
            f"{path}: a {family} model trained with task {getattr(args, 'task', None)!r}; "
            f"only {_TASKS[family]!r} checkpoints from before fairseq's hydra configs convert"
        )
    table = FAIRSEQ_0_12_2_DEFAULTS[family]
    return {"task": _override(table["task"], args), "model": _override(table["model"], args)}
