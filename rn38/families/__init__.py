"""The segmentation networks ResNet-38 is compared with (registered in :data:`rn38.zoo.FAMILIES`):
FCN-32s (:mod:`.fcn32s`), DeepLabv3 (:mod:`.deeplabv3`), DeconvNet (:mod:`.deconvnet`)."""
