"""Methods: the registry (:mod:`.registry`), the contexts a method sees (:mod:`.context`) and one module per paper.

Every other module in this folder is discovered and imported by :func:`harness.methods.registry.all_methods`
(no central import list): adding a paper is adding one module that registers its functions.
"""
