"""Text models: the sentence VAE with its LSTM or dilated-CNN decoder (:mod:`.sentence_vae`,
:mod:`.cnn_decoder`), decoding (greedy, beam, sampling, homotopies: :mod:`.decoding`) and the
latent symbol-sequence autoencoder with its scores (:mod:`.symbol_sequences`,
:mod:`.symbol_metrics`)."""
