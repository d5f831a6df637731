"""kclassify's own small CNN: three conv blocks, fast on a laptop CPU."""

from __future__ import annotations


# Keras' default 0.99 needs hundreds of steps before the moving statistics used at validation
# match the weights: on intel_scenes (64 px, batch 32, 47 steps/epoch) validation accuracy over the
# first 4 epochs stayed far lower with 0.99 than with 0.9 (PyTorch's default) (measured:
# docs/benchmarks.md, "BatchNorm momentum").
BN_MOMENTUM = 0.9


def activation_layer(activation: str, spatial: bool = False, **kwargs):
    """A Keras layer for an activation name; PReLU is a layer with weights, not a function.

    Args:
        spatial: the input is a feature map; PReLU then learns one slope per channel
            (not per pixel, which would tie the weights to the input size).
    """
    from keras import layers

    if activation == "prelu":
        return layers.PReLU(shared_axes=[1, 2] if spatial else None, **kwargs)
    return layers.Activation(activation, **kwargs)


def SmallCNN(input_shape, include_top=False, weights=None, filters=(32, 64, 128, 256),
             activation="relu", width=1.0, depth=1, name="small_cnn"):
    """A compact VGG-style feature extractor with BatchNorm, in Keras applications' signature.

    A stride-2 stem then one 3x3 conv per block, each block but the last halving the
    resolution: about 57 M multiply-adds per 64 px image, so it trains at a few
    hundred images per second on a 2-core laptop CPU.

    Args:
        input_shape: ``(height, width, 3)``; expects normalised input.
        include_top: must be False; kclassify adds its own head.
        weights: None, or a path to a ``.weights.h5`` file of this architecture.
        filters: channels of the stem, then of each block.
        activation: any Keras activation name.
        width: multiplies every convolution's channels (2.0: about 4x the multiply-adds).
        depth: 3x3 convolutions per block after the stem (2: VGG's pairs; about 2.3x the
            multiply-adds). Layer names of ``depth=1`` stay ``block{i}_conv``, so weights
            saved before these options load as they did.
    """
    import keras
    from keras import layers

    if include_top:
        raise ValueError("SmallCNN is a feature extractor; build the head with build_classifier().")
    inputs = keras.Input(input_shape)
    x = inputs
    for i, f in enumerate(filters):
        stem = i == 0
        for j in range(1 if stem else max(int(depth), 1)):
            suffix = "" if j == 0 else f"{j + 1}"  # block1_conv, block1_conv2, ...
            x = layers.Conv2D(max(int(round(f * width)), 1), 3, strides=2 if stem else 1, padding="same",
                              use_bias=False, name="stem_conv" if stem else f"block{i}_conv{suffix}")(x)
            x = layers.BatchNormalization(momentum=BN_MOMENTUM,
                                          name="stem_bn" if stem else f"block{i}_bn{suffix}")(x)
            x = activation_layer(activation, spatial=True, name="stem_act" if stem else f"block{i}_act{suffix}")(x)
        if 0 < i < len(filters) - 1:
            x = layers.MaxPooling2D(name=f"block{i}_pool")(x)
    model = keras.Model(inputs, x, name=name)
    if weights not in (None, "none"):
        model.load_weights(weights)
    return model
