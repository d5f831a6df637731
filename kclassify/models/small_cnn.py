"""kclassify's own small CNN: three conv blocks, fast on a laptop CPU."""

from __future__ import annotations


def SmallCNN(input_shape, include_top=False, weights=None, filters=(32, 64, 128), activation="relu",
             name="small_cnn"):
    """A VGG-style feature extractor with BatchNorm, in Keras applications' signature.

    Args:
        input_shape: ``(height, width, 3)``; expects normalised input.
        include_top: must be False; kclassify adds its own head.
        weights: None, or a path to a ``.weights.h5`` file of this architecture.
        filters: channels of each block; each block halves the resolution.
    """
    import keras
    from keras import layers

    if include_top:
        raise ValueError("SmallCNN is a feature extractor; build the head with build_classifier().")
    inputs = keras.Input(input_shape)
    x = inputs
    for i, f in enumerate(filters):
        f = int(f)
        for j in range(2):
            x = layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"block{i + 1}_conv{j + 1}")(x)
            x = layers.BatchNormalization(name=f"block{i + 1}_bn{j + 1}")(x)
            x = layers.Activation(activation, name=f"block{i + 1}_act{j + 1}")(x)
        x = layers.MaxPooling2D(name=f"block{i + 1}_pool")(x)
    model = keras.Model(inputs, x, name=name)
    if weights not in (None, "none"):
        model.load_weights(weights)
    return model
