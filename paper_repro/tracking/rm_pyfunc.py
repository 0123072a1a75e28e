"""MLflow pyfunc scoring wrapper of an exported reward model, logged as "models from code"
(MLflow loads this file, never a pickle). Input: a DataFrame with a ``text`` column holding the
training format (BOS + Tulu turns ending in EOS, no trailing newline); output: one reward per row.

Self-contained on purpose: it runs wherever MLflow loads the model, without paper_repro.
"""

import mlflow
from mlflow.pyfunc import PythonModel


class RewardModel(PythonModel):
    def load_context(self, context):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        folder = context.artifacts["model"]
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.tokenizer.padding_side = "right"
        self.model = AutoModelForSequenceClassification.from_pretrained(
            folder, use_safetensors=True, trust_remote_code=False
        ).eval()

    def predict(self, context, model_input, params=None):
        import torch

        # The text carries its own BOS and EOS strings; the pad id is set in the export, so HF
        # pools at the last non-pad token, the EOS.
        batch = self.tokenizer(
            list(model_input["text"]), add_special_tokens=False, padding=True, return_tensors="pt"
        )
        with torch.inference_mode():
            return self.model(**batch).logits[:, 0].float().numpy()


mlflow.models.set_model(RewardModel())
