"""The participant's side: private records, SISA training, exact forgetting, Flower ClientApp."""
