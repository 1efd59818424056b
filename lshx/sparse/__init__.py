"""Dynamic sparse training (Selfish-RNN): masks, death, growth, redistribution."""
