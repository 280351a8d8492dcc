"""Prints the comparison table of docs/initialisers.md: python docs/scripts/compare_initialisers.py"""
import numpy as np
from conformance.synthetic import *
from qref import loftq, lqlora, quailora
from qref.lowrank import nf_quantize
W = llm_like_weight(256, 512, 0); X = calibration_inputs(2048, 512, 0); C = quailora.second_moment(X)
print("| bits | rank | QLoRA (B=0) | LoftQ T=1 | LoftQ T=5 | LQ-LoRA | QuAILoRA uncal. | QuAILoRA cal. (calibrated J) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
nW=np.linalg.norm(W)
for bits in (4,3,2):
  cfg=lqlora.LQConfig(bits,64,256)
  Q=cfg.quantize(W)
  for r in (8,32):
    l1=loftq.loftq(W,r,1,quantizer=cfg.quantize); l5=loftq.loftq(W,r,5,quantizer=cfg.quantize)
    lq=lqlora.decompose(W,r,cfg,max_iter=20)
    A,B=quailora.uncalibrated(W,Q,r); cal=quailora.calibrated(W,Q,r,C,max_iter=300)
    J0=quailora.objective(W-Q,np.zeros_like(B),np.zeros_like(A),C)
    f=lambda e: f"{e/nW:.4f}"
    print(f"| {bits} | {r} | {f(np.linalg.norm(W-Q))} | {f(l1.errors[0])} | {f(l5.errors[-1])} | {f(lq.errors[lq.best])} | {f(np.linalg.norm(W-Q-B@A))} | {f(np.linalg.norm(W-Q-cal.lora_B@cal.lora_A))} (J {cal.history[-1]/J0:.3f} of B=0) |")
