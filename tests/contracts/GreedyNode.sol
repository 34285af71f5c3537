// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title A node that tries to be paid twice (TEST ONLY)
/// @notice Acts as a Lethe node through `act`, and when Lethe pays it, calls Lethe again with
///         `reentry` (e.g. the same claim or withdrawal) before the first payment returns.
///         The tests check no reentrant call succeeds and it is paid exactly what it earned.
/// @dev Named Lethe so coordinator.contract_build.compile_contract builds it unchanged.
contract Lethe {
    address public immutable target;
    address public immutable operator;
    bytes public reentry;
    uint256 public received;
    uint256 public reentryAttempts;
    uint256 public reentrySuccesses;

    constructor(address target_) {
        target = target_;
        operator = msg.sender;
    }

    /// @notice Call the Lethe contract as this node, bubbling up its revert.
    function act(bytes calldata data) external payable {
        require(msg.sender == operator, "operator only");
        (bool ok, bytes memory ret) = target.call{value: msg.value}(data);
        if (!ok) {
            assembly {
                revert(add(ret, 32), mload(ret))
            }
        }
    }

    function setReentry(bytes calldata data) external {
        require(msg.sender == operator, "operator only");
        reentry = data;
    }

    receive() external payable {
        received += msg.value;
        if (reentry.length != 0 && reentryAttempts < 3) {
            reentryAttempts += 1;
            (bool ok,) = target.call(reentry);
            if (ok) reentrySuccesses += 1;
        }
    }
}
