"""The optimizers of chapter 8, as ``torch.optim.Optimizer`` subclasses.

==================  =========================================  ==========================
class               book                                       kernel
==================  =========================================  ==========================
SGD                 Algorithms 8.1, 8.2, 8.3 (§8.3)            torch's SGD kernels
AdaGrad             Algorithm 8.4 (§8.5.1)                     torch's Adagrad kernels
RMSProp             Algorithms 8.5, 8.6 (§8.5.2)               lightopt (δ inside the root)
Adam                Algorithm 8.7 (§8.5.3)                     torch's Adam kernels
==================  =========================================  ==========================
"""

from lightopt.optim.adagrad import AdaGrad
from lightopt.optim.adam import Adam
from lightopt.optim.rmsprop import RMSProp
from lightopt.optim.sgd import SGD

__all__ = ["SGD", "AdaGrad", "RMSProp", "Adam"]
