"""AlexNet (Krizhevsky et al., 2012) as a feature extractor, adapted to the input size."""

from __future__ import annotations

from .small_cnn import BN_MOMENTUM, activation_layer


def AlexNet(input_shape, include_top=False, weights=None, activation="relu", batch_norm=True,
            name="alexnet"):
    """The five convolutions of AlexNet (96-256-384-384-256 channels, overlapping 3x3/2 pooling).

    The 11x11 stride-4 stem suits the original 224 px input; smaller inputs get a
    smaller, less strided stem (5x5/2 from 64 px, 3x3/1 below) so the feature map
    does not vanish. BatchNorm after each convolution replaces the 2012 local
    response normalisation (``batch_norm=False`` drops it). The two 4096-unit
    layers of the original are the head's business (``--hidden-units``).

    Args:
        input_shape: ``(height, width, 3)``, at least 16 px.
        weights: None, or a path to a ``.weights.h5`` file of this architecture.
        activation: relu, leaky_relu, prelu, elu, gelu, tanh or sigmoid.
    """
    import keras
    from keras import layers

    if include_top:
        raise ValueError("AlexNet here is a feature extractor; build the head with build_classifier().")
    size = min(input_shape[:2])
    kernel, stride = (11, 4) if size >= 128 else (5, 2) if size >= 64 else (3, 1)
    inputs = keras.Input(input_shape)
    x = inputs
    plan = [(96, kernel, stride, True), (256, 5, 1, True), (384, 3, 1, False), (384, 3, 1, False),
            (256, 3, 1, True)]
    for i, (filters, k, s, pool) in enumerate(plan, start=1):
        x = layers.Conv2D(filters, k, strides=s, padding="same", use_bias=not batch_norm,
                          name=f"conv{i}")(x)
        if batch_norm:
            x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"conv{i}_bn")(x)
        x = activation_layer(activation, spatial=True, name=f"conv{i}_act")(x)
        if pool:
            x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"pool{i}")(x)
    model = keras.Model(inputs, x, name=name)
    if weights not in (None, "none"):
        model.load_weights(weights)
    return model
