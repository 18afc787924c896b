"""Gradio UI only: handlers parse input, call the engine, format output."""
