"""One PyTorch measurement in a fresh process, printed as JSON (the reference side of `deno task bench`).

    python bench/torch_worker.py --mode train|infer --size 446 --batch 4 --steps 3 [--variant V]
    python bench/torch_worker.py --mode epoch --data DIR --size 446 --batch 4

train / infer: torchvision's mobilenet_v3_large with the paper's head (last Linear -> 3 classes),
SGD with momentum and cross-entropy, on random inputs; the first step is a warm-up, not timed.
--variant: nchw (the paper's default layout), channels_last (PyTorch's faster CPU layout for
convolutions), bf16 (channels_last with bfloat16 autocast; weights and the update stay float32).
epoch: the paper's pipeline for one whole epoch: ImageFolder + transforms that decode and resize
every image every epoch, SubsetRandomSampler (216 train / 35 validation), a training pass and a
validation pass. Peak memory is ru_maxrss of this process.
"""
import argparse
import json
import resource
import time

import torch
import torch.nn as nn
import torchvision
from torchvision import transforms

parser = argparse.ArgumentParser()
parser.add_argument("--mode", default="train")
parser.add_argument("--size", type=int, default=224)
parser.add_argument("--batch", type=int, default=1)
parser.add_argument("--steps", type=int, default=3)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--data", default=None)
parser.add_argument("--variant", default="nchw", choices=["nchw", "channels_last", "bf16"])
args = parser.parse_args()

torch.set_num_threads(args.threads)
torch.manual_seed(1)


def model_with_paper_head():
    model = torchvision.models.mobilenet_v3_large(weights=None)
    model.classifier[3] = nn.Linear(model.classifier[3].in_features, 3)
    return model


def peak_rss_mb():
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


model = model_with_paper_head()
optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
criterion = nn.CrossEntropyLoss()

if args.mode in ("train", "infer"):
    import contextlib
    x = torch.rand(args.batch, 3, args.size, args.size) * 2 - 1
    y = torch.arange(args.batch) % 3
    if args.variant in ("channels_last", "bf16"):
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.variant == "bf16" \
        else contextlib.nullcontext
    times = []
    for i in range(args.steps + 1):
        t0 = time.perf_counter()
        if args.mode == "train":
            model.train()
            optimizer.zero_grad()
            with autocast():
                loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            loss.item()
        else:
            model.eval()
            with torch.no_grad(), autocast():
                model(x).float().numpy()
        if i > 0:
            times.append((time.perf_counter() - t0) * 1000 / args.batch)
    print(json.dumps({"framework": "pytorch", "variant": args.variant, "mode": args.mode, "size": args.size,
                      "batch": args.batch, "msPerImage": times, "peakRssMB": peak_rss_mb()}))
elif args.mode in ("epoch", "reproduce"):
    import numpy as np
    normalize = transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    train_tf = transforms.Compose([transforms.Resize((args.size, args.size)), transforms.RandomHorizontalFlip(),
                                   transforms.ColorJitter(0.2, 0.2, 0.2, 0.02), transforms.ToTensor(), normalize])
    valid_tf = transforms.Compose([transforms.Resize((args.size, args.size)), transforms.ToTensor(), normalize])
    train_data = torchvision.datasets.ImageFolder(f"{args.data}/train", transform=train_tf)
    valid_data = torchvision.datasets.ImageFolder(f"{args.data}/train", transform=valid_tf)
    indices = list(range(len(train_data)))
    np.random.seed(42)
    np.random.shuffle(indices)
    split = int(np.floor(0.14 * len(train_data)))
    train_loader = torch.utils.data.DataLoader(train_data, batch_size=args.batch,
                                               sampler=torch.utils.data.SubsetRandomSampler(indices[split:]))
    valid_loader = torch.utils.data.DataLoader(valid_data, batch_size=args.batch,
                                               sampler=torch.utils.data.SubsetRandomSampler(indices[:split]))
    # The paper's schedule: x0.1 after epochs 4 and 6, 8 epochs, keep the lowest validation loss.
    epochs = 1 if args.mode == "epoch" else 8
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[4, 6], gamma=0.1)
    t0 = time.perf_counter()
    best_loss, best_state, history = float("inf"), None, []
    for epoch in range(epochs):
        model.train()
        train_loss, train_correct = 0.0, 0
        for images, labels in train_loader:
            optimizer.zero_grad()
            output = model(images)
            loss = criterion(output, labels)
            loss.backward()
            optimizer.step()
            train_loss += loss.item() * images.size(0)
            train_correct += (output.argmax(1) == labels).sum().item()
        model.eval()
        valid_loss, valid_correct = 0.0, 0
        with torch.no_grad():
            for images, labels in valid_loader:
                output = model(images)
                valid_loss += criterion(output, labels).item() * images.size(0)
                valid_correct += (output.argmax(1) == labels).sum().item()
        scheduler.step()
        n_train, n_valid = len(indices) - split, split
        history.append({"epoch": epoch + 1, "trainLoss": train_loss / n_train, "trainAccuracy": train_correct / n_train,
                        "validLoss": valid_loss / n_valid, "validAccuracy": valid_correct / n_valid,
                        "seconds": time.perf_counter() - t0})
        if valid_loss / n_valid < best_loss:
            best_loss = valid_loss / n_valid
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
    result = {"framework": "pytorch", "mode": args.mode, "size": args.size, "batch": args.batch,
              "images": len(indices), "history": history}
    if args.mode == "reproduce":
        model.load_state_dict(best_state)
        model.eval()
        test_data = torchvision.datasets.ImageFolder(f"{args.data}/test", transform=valid_tf)
        correct = 0
        with torch.no_grad():
            for images, labels in torch.utils.data.DataLoader(test_data, batch_size=args.batch):
                correct += (model(images).argmax(1) == labels).sum().item()
        result["testCorrect"], result["testTotal"] = correct, len(test_data)
    result["seconds"] = time.perf_counter() - t0
    result["peakRssMB"] = peak_rss_mb()
    print(json.dumps(result))
