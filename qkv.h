#pragma once
// qkv's library in one include, for experiments: #include <qkv/qkv.h> (link qkv::layers and qkv::optim, which bring
// qkv::core). Tensors, autograd, hooks and every op; layers, models and GPT-2; optimizers and schedules; saving and
// loading. Datasets (qkv::datasets) and the trainer (qkv::train) have their own headers.
#include <qkv/core/autograd.h>
#include <qkv/core/dispatch.h>
#include <qkv/core/errors.h>
#include <qkv/core/gemm.h>
#include <qkv/core/generator.h>
#include <qkv/core/gradcheck.h>
#include <qkv/core/ops.h>
#include <qkv/core/parallel.h>
#include <qkv/core/precision.h>
#include <qkv/core/safetensors.h>
#include <qkv/core/tensor.h>
#include <qkv/layers/attention.h>
#include <qkv/layers/gpt2.h>
#include <qkv/layers/linear.h>
#include <qkv/layers/models.h>
#include <qkv/layers/module.h>
#include <qkv/layers/save.h>
#include <qkv/layers/transformer.h>
#include <qkv/optim/optimizer.h>
#include <qkv/optim/save.h>
#include <qkv/optim/schedule.h>
