"""One package per payment method (upi, wallet, netbanking, card), each a `PaymentConnector`
(connectors/base.py); `registry` names them. Adding a method: a package and a registry line."""
